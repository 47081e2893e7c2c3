# `cmake --install`: the library, its public headers, the tool, the module type list and a
# CMake package, so that a project outside this tree can do
#   find_package(exmode REQUIRED)
#   target_link_libraries(app PRIVATE exmode::exmode)
# The package config (cmake/exmodeConfig.cmake.in) finds the dependencies again: the library
# is static, so its private ones (libdeflate, simdjson, Threads) are in its link interface.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The same name in the build tree as in an installed package.
add_library(exmode::exmode ALIAS exmode_lib)
set_target_properties(exmode_lib PROPERTIES EXPORT_NAME exmode)
# The public headers need C++20 (std::span among others): consumers get it with the target.
target_compile_features(exmode_lib PUBLIC cxx_std_20)

set(EXMODE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/exmode)

install(TARGETS exmode_lib EXPORT exmodeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS exmode RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/exmode/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/exmode
  FILES_MATCHING PATTERN "*.h")
# Compiled into the library too; installed as the reference for lists of one's own.
install(FILES data/mode_dependent_modules.txt DESTINATION ${CMAKE_INSTALL_DATADIR}/exmode)

install(EXPORT exmodeTargets NAMESPACE exmode:: DESTINATION ${EXMODE_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/exmodeConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/exmodeConfig.cmake
  INSTALL_DESTINATION ${EXMODE_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/exmodeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/exmodeConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/exmodeConfigVersion.cmake
  DESTINATION ${EXMODE_INSTALL_CMAKEDIR})
