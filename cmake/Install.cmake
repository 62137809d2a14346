# cmake --install: programs, libkeel (shared and static), its headers and
# pkg-config files, man pages, systemd units, example configurations and the
# project's documents, in the usual places (GNUInstallDirs). The layout and the
# reasons are in docs/internals/packaging.md. Included last from the top
# CMakeLists.txt, so every directory has finished adding to its targets.
include(GNUInstallDirs)

# Programs: the CLI in bin, the daemons in sbin.
# keel-fleetd is there unless KEEL_WITH_FLEETD=OFF.
install(TARGETS keel-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS keeld RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
if(TARGET keel-fleetd)
  install(TARGETS keel-fleetd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
endif()

# Man pages: every page of docs/man, by its section.
file(GLOB KEEL_MAN1 CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/man/*.1)
file(GLOB KEEL_MAN8 CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/man/*.8)
install(FILES ${KEEL_MAN1} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${KEEL_MAN8} DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)

# systemd units: every packaging/*.service (but a program's that is left out
# of the build), into systemd's own directory.
execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --variable=systemdsystemunitdir systemd
                OUTPUT_VARIABLE _unitdir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0 OR _unitdir STREQUAL "")
  set(_unitdir lib/systemd/system) # under the install prefix
endif()
set(KEEL_SYSTEMD_UNIT_DIR "${_unitdir}" CACHE PATH "where the systemd units are installed")
file(GLOB KEEL_UNITS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/packaging/*.service)
foreach(u IN LISTS KEEL_UNITS)
  get_filename_component(_prog ${u} NAME_WE)
  if(TARGET ${_prog} OR NOT _prog MATCHES "^keel")
    install(FILES ${u} DESTINATION ${KEEL_SYSTEMD_UNIT_DIR})
  endif()
endforeach()

# The users the units run as (systemd-sysusers), one file per daemon, beside the units.
execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --variable=sysusersdir systemd
                OUTPUT_VARIABLE _sysusersdir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0 OR _sysusersdir STREQUAL "")
  set(_sysusersdir lib/sysusers.d)
endif()
set(KEEL_SYSUSERS_DIR "${_sysusersdir}" CACHE PATH "where the systemd-sysusers files are installed")
file(GLOB KEEL_SYSUSERS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/packaging/sysusers.d/*.conf)
foreach(u IN LISTS KEEL_SYSUSERS)
  get_filename_component(_prog ${u} NAME_WE)
  if(TARGET ${_prog})
    install(FILES ${u} DESTINATION ${KEEL_SYSUSERS_DIR})
  endif()
endforeach()

# Examples (not live configurations: keeld's keeld.conf is written per device
# by keel factory provision, and the others name example hosts).
set(KEEL_EXAMPLES_DIR ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/keeld.conf.example DESTINATION ${KEEL_EXAMPLES_DIR})
if(TARGET keel-fleetd)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/keel-fleetd.conf DESTINATION ${KEEL_EXAMPLES_DIR})
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/packaging/mosquitto DESTINATION ${KEEL_EXAMPLES_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/examples/thermostat/thermostat.c ${PROJECT_SOURCE_DIR}/examples/thermostat/product.json
        DESTINATION ${KEEL_EXAMPLES_DIR}/thermostat)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/keel-device DESTINATION ${KEEL_EXAMPLES_DIR})

# The project's documents, those that exist.
foreach(f README.md SECURITY.md LICENSE LICENSE.md COPYING)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${f})
    install(FILES ${PROJECT_SOURCE_DIR}/${f} DESTINATION ${CMAKE_INSTALL_DOCDIR})
  endif()
endforeach()
