# The REST half of the query API (api.h): server, auth, routes, docs. Included by CMakeLists.txt
# in this folder, after stream.cmake, so that the stream's target exists when it is built.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBJWT REQUIRED IMPORTED_TARGET libjwt)
find_package(Threads REQUIRED)

add_library(dlotel_api STATIC
  ${CMAKE_CURRENT_LIST_DIR}/api_server.c
  ${CMAKE_CURRENT_LIST_DIR}/api_routes.c
  ${CMAKE_CURRENT_LIST_DIR}/api_params.c
  ${CMAKE_CURRENT_LIST_DIR}/api_auth.c
  ${CMAKE_CURRENT_LIST_DIR}/api_docs.c)
target_link_libraries(dlotel_api PUBLIC dlotel_receiver dlotel_exporter dlotel_net dlotel_otlp
  dlotel_core PkgConfig::LIBJWT PkgConfig::JANSSON PkgConfig::LIBUV Threads::Threads)
if(TARGET dlotel_api_stream)
  target_link_libraries(dlotel_api PUBLIC dlotel_api_stream)
  target_compile_definitions(dlotel_api PRIVATE DLOTEL_API_HAVE_STREAM=1)
endif()

dlotel_unit_test(test_api_params SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_api_params.c
  LIBS dlotel_api)
dlotel_unit_test(test_api_auth SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_api_auth.c
  LIBS dlotel_api PkgConfig::LIBJWT PkgConfig::JANSSON)

dlotel_fuzz_target(api_params SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_api_params.c
  LIBS dlotel_api)
dlotel_fuzz_target(jwt SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_jwt.c LIBS dlotel_api)
