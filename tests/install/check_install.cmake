# Installs a build tree into a fresh prefix, builds tests/install/consumer against it with
# find_package(exmode) and runs the consumer on an archive in train mode.
#   cmake -DBUILD_DIR=... -DWORK_DIR=... -DCONSUMER_DIR=... -DARCHIVE=... [-DCONFIG=...]
#         [-DGENERATOR=... -DCXX_COMPILER=... -DMAKE_PROGRAM=... -DCXX_FLAGS=... -DLINKER_FLAGS=...]
#         -P check_install.cmake
# Everything it writes is under WORK_DIR (in the build tree), emptied first.
cmake_minimum_required(VERSION 3.20)

foreach(var BUILD_DIR WORK_DIR CONSUMER_DIR ARCHIVE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_install.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

set(prefix ${WORK_DIR}/prefix)
set(consumer_build ${WORK_DIR}/consumer-build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

run("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --config ${CONFIG})
foreach(file include/exmode/model.h share/exmode/mode_dependent_modules.txt)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "not installed: ${prefix}/${file}")
  endif()
endforeach()

set(configure_args -S ${CONSUMER_DIR} -B ${consumer_build}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=${CONFIG})
if(GENERATOR)
  list(APPEND configure_args -G ${GENERATOR})
endif()
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(CXX_COMPILER)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(CXX_FLAGS)  # the main build's sanitizer flags, which the static library needs at link time
  list(APPEND configure_args "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}")
endif()
if(LINKER_FLAGS)
  list(APPEND configure_args "-DCMAKE_EXE_LINKER_FLAGS=${LINKER_FLAGS}")
endif()
run("configuring the consumer" ${CMAKE_COMMAND} ${configure_args})
run("building the consumer" ${CMAKE_COMMAND} --build ${consumer_build} --config ${CONFIG})

set(consumer ${consumer_build}/exmode_consumer)
if(NOT EXISTS ${consumer})  # multi-config generators: one folder per configuration
  set(consumer ${consumer_build}/${CONFIG}/exmode_consumer)
endif()
run("running the consumer" ${consumer} ${ARCHIVE})
message(STATUS "consumer output:\n${run_output}")
if(NOT run_output MATCHES "mode: train\n")
  message(FATAL_ERROR "expected the archive's mode to be train, got:\n${run_output}")
endif()
if(NOT run_output MATCHES "changes: [1-9][0-9]*\n")
  message(FATAL_ERROR "expected the switch to eval to make changes, got:\n${run_output}")
endif()
