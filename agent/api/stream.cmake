# The live stream (api_stream.h): WebSocket clients over connections taken over from the API's
# HTTP server, framed by wslay; rows rendered as the REST API renders them (api_rows.c).
# Debian's libwslay-dev ships no .pc file, only a CMake package without include paths:
# find the header and library directly (both are in the default search paths).
find_package(PkgConfig REQUIRED)
find_path(WSLAY_INCLUDE_DIR wslay/wslay.h REQUIRED)
find_library(WSLAY_LIBRARY wslay REQUIRED)
pkg_check_modules(LIBCRYPTO REQUIRED IMPORTED_TARGET libcrypto)

add_library(dlotel_api_stream STATIC api_stream.c api_ws.c api_rows.c)
# dlotel_sink_values: the sink's rows without DuckDB (agent/sink/sink_values.h).
target_link_libraries(dlotel_api_stream PUBLIC dlotel_sink_values dlotel_net dlotel_otlp dlotel_core
  PkgConfig::LIBUV PkgConfig::JANSSON ${WSLAY_LIBRARY} PkgConfig::LIBCRYPTO)
target_include_directories(dlotel_api_stream PUBLIC ${WSLAY_INCLUDE_DIR})

dlotel_unit_test(test_api_stream SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_api_stream.c
  LIBS dlotel_api_stream dlotel_exporter dlotel_net dlotel_otlp dlotel_core PkgConfig::JANSSON)
add_dependencies(test_api_stream dlotel_sink)
target_compile_definitions(test_api_stream PRIVATE
  DLOTEL_SINK_MODULE_PATH="$<TARGET_FILE:dlotel_sink>")

# Bytes from a client after the handshake, through the real HTTP connection and the stream.
dlotel_fuzz_target(ws_frame SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_ws_frame.c
  LIBS dlotel_api_stream dlotel_net)
