# Warnings are errors, and every binary gets the usual Linux hardening.
add_compile_options(-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla
                    -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter)
add_compile_definitions(_FORTIFY_SOURCE=3 _DEFAULT_SOURCE)
add_compile_options(-fstack-protector-strong -fstack-clash-protection -fcf-protection -fPIE)
if(NOT CMAKE_BUILD_TYPE STREQUAL "Debug")
  add_compile_options(-O2)
endif()
add_link_options(-pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack)
if(KEEL_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  # FORTIFY and ASan disagree on some interceptors; ASan checks more anyway.
  add_compile_options(-U_FORTIFY_SOURCE)
endif()
# The profiles (docs/internals/build-profiles.md). The test profile's hooks
# are one macro; production compiles debug messages out, drops unused code and
# unneeded libraries, and keeps the debug info beside each program
# (keel_split_debug: <program>.debug, linked by .gnu_debuglink).
if(KEEL_TEST_HOOKS)
  add_compile_definitions(KEEL_TEST_HOOKS=1)
endif()
if(KEEL_PROFILE_USED STREQUAL "production")
  add_compile_definitions(KEEL_LOG_NO_DEBUG=1)
  add_compile_options(-ffunction-sections -fdata-sections)
  add_link_options(-Wl,--gc-sections -Wl,--as-needed)
endif()
option(KEEL_SPLIT_DEBUG "production: move each program's debug info and symbols to <program>.debug" ON)
function(keel_split_debug target)
  if(KEEL_PROFILE_USED STREQUAL "production" AND KEEL_SPLIT_DEBUG)
    add_custom_command(TARGET ${target} POST_BUILD
      COMMAND ${CMAKE_OBJCOPY} --only-keep-debug $<TARGET_FILE:${target}> $<TARGET_FILE:${target}>.debug
      COMMAND ${CMAKE_OBJCOPY} --strip-unneeded --remove-section=.comment
              --add-gnu-debuglink=$<TARGET_FILE:${target}>.debug $<TARGET_FILE:${target}>
      VERBATIM)
  endif()
endfunction()
