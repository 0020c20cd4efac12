# Finds dlotel's dependencies. All come from Debian packages (scripts/bootstrap.sh installs them)
# except llhttp's C sources, which may be unpacked into .deps/, and DuckDB (DESIGN.md section 2).
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(PROTOBUFC REQUIRED IMPORTED_TARGET libprotobuf-c)
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
find_program(PROTOC_C NAMES protoc-c protoc-gen-c REQUIRED)

# llhttp: compiled from the C sources Debian's node-llhttp installs (never copied into the repo).
find_path(LLHTTP_SRC_DIR llhttp.c
  PATHS /usr/share/llhttp ${PROJECT_SOURCE_DIR}/.deps/llhttp/usr/share/llhttp NO_DEFAULT_PATH)
find_path(LLHTTP_INCLUDE_DIR llhttp.h
  PATHS /usr/share/include/llhttp ${PROJECT_SOURCE_DIR}/.deps/llhttp/usr/share/include/llhttp
  NO_DEFAULT_PATH)
if(NOT LLHTTP_SRC_DIR OR NOT LLHTTP_INCLUDE_DIR)
  message(FATAL_ERROR "llhttp sources not found: run scripts/bootstrap.sh")
endif()
add_library(dlotel_llhttp STATIC
  ${LLHTTP_SRC_DIR}/llhttp.c ${LLHTTP_SRC_DIR}/api.c ${LLHTTP_SRC_DIR}/http.c)
target_include_directories(dlotel_llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
# Generated code: its warnings are not ours to fix.
target_compile_options(dlotel_llhttp PRIVATE -w)

# DuckDB: a system install wins; otherwise the copy the bootstrap fetched with npm pack.
find_path(DUCKDB_INCLUDE_DIR duckdb.h)
find_library(DUCKDB_LIBRARY duckdb)
if(NOT DUCKDB_INCLUDE_DIR OR NOT DUCKDB_LIBRARY)
  unset(DUCKDB_INCLUDE_DIR CACHE)
  unset(DUCKDB_LIBRARY CACHE)
  find_path(DUCKDB_INCLUDE_DIR duckdb.h PATHS ${PROJECT_SOURCE_DIR}/.deps/duckdb/include NO_DEFAULT_PATH)
  find_library(DUCKDB_LIBRARY duckdb PATHS ${PROJECT_SOURCE_DIR}/.deps/duckdb/lib NO_DEFAULT_PATH)
endif()
if(NOT DUCKDB_INCLUDE_DIR OR NOT DUCKDB_LIBRARY)
  message(FATAL_ERROR "DuckDB not found: run scripts/bootstrap.sh")
endif()
message(STATUS "DuckDB: ${DUCKDB_LIBRARY}")
