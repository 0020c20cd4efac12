# dlotel_unit_test(NAME SOURCES ... LIBS ... [LINK_OPTIONS ...]): a cmocka binary run by ctest.
# LINK_OPTIONS go to target_link_options (e.g. -Wl,--wrap=malloc for allocation-failure tests).
function(dlotel_unit_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LINK_OPTIONS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  if(T_LINK_OPTIONS)
    target_link_options(${name} PRIVATE ${T_LINK_OPTIONS})
  endif()
  target_compile_definitions(${name} PRIVATE
    DLOTEL_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    DLOTEL_PAYLOADS_DIR="${PROJECT_SOURCE_DIR}/../shared/payloads")
  add_test(NAME unit.${name} COMMAND ${name})
  set_tests_properties(unit.${name} PROPERTIES LABELS unit TIMEOUT 120)
endfunction()

# dlotel_fuzz_target(NAME SOURCES ... LIBS ...): a file defining LLVMFuzzerTestOneInput.
# Always builds fuzz_NAME_replay, which ctest runs over tests/fuzz/corpus/NAME/ on every build;
# with DLOTEL_FUZZ=ON also builds fuzz_NAME, the libFuzzer binary (scripts/fuzz.sh runs it).
function(dlotel_fuzz_target name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(fuzz_${name}_replay ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay.c)
  target_link_libraries(fuzz_${name}_replay PRIVATE ${F_LIBS})
  set(corpus ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name})
  add_test(NAME fuzz.${name} COMMAND fuzz_${name}_replay ${corpus})
  set_tests_properties(fuzz.${name} PROPERTIES LABELS fuzz TIMEOUT 300)
  if(DLOTEL_FUZZ)
    add_executable(fuzz_${name} ${F_SOURCES})
    target_link_libraries(fuzz_${name} PRIVATE ${F_LIBS})
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    # Every libFuzzer binary at the top of the build directory, where scripts/fuzz.sh looks.
    set_target_properties(fuzz_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
  endif()
endfunction()
