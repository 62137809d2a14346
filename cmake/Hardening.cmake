# Warnings are errors, and every binary gets the usual Linux hardening.
add_compile_options(-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla
                    -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter)
add_compile_definitions(_FORTIFY_SOURCE=3 _DEFAULT_SOURCE)
add_compile_options(-fstack-protector-strong -fcf-protection -fPIE)
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
if(KEEL_FAULT_INJECTION)
  add_compile_definitions(KEEL_FAULT_INJECTION=1)
endif()
