# Builds the setup UI (ui/: static HTML, CSS, JS, images) into keeld.
#
#   include(${PROJECT_SOURCE_DIR}/cmake/EmbedUI.cmake)
#   keel_embed_ui(${CMAKE_CURRENT_BINARY_DIR}/ui_assets.c ${PROJECT_SOURCE_DIR}/ui)
#   target_sources(keeld PRIVATE ${CMAKE_CURRENT_BINARY_DIR}/ui_assets.c)
#
# The generated C file defines keel_ui_assets[] and keel_ui_assets_len
# (src/api/ui_assets.h), one entry per file, sorted by path ("/index.html",
# "/app.js", ...), so a server can binary-search it with strcmp. It is
# regenerated whenever a file in the UI folder changes, and a file added or
# removed there re-runs the configure step (CONFIGURE_DEPENDS).
#
# A second UI in the same program, or one beside keeld's, takes another
# symbol prefix (the table's type stays keel_ui_asset_t):
#
#   keel_embed_ui(${CMAKE_CURRENT_BINARY_DIR}/fleet_ui_assets.c ${PROJECT_SOURCE_DIR}/ui/fleet PREFIX fleet_ui)
#
# defines fleet_ui_assets[] and fleet_ui_assets_len (declared extern by its
# user). A subfolder holding its own index.html is such a separate UI and is
# left out of its parent's table (ui/fleet/ is not part of keeld's).
#
# Every file must have one of the known extensions (the table below), a
# plain path ([A-Za-z0-9._-] and '/') and at most KEEL_UI_FILE_MAX bytes;
# anything else fails the build rather than being served with a guessed
# type. Hidden files (a path part starting with '.') are left out.
#
# The same file is the generator: run as a script (cmake -DUI_DIR=<dir>
# -DOUT=<file.c> -P cmake/EmbedUI.cmake), it reads each file in hex and turns
# every byte into a 0x.. literal; it needs nothing but CMake.
if(CMAKE_SCRIPT_MODE_FILE)
  cmake_minimum_required(VERSION 3.25)
endif()

set(KEEL_UI_FILE_MAX 4194304)
set(KEEL_EMBED_UI_SCRIPT "${CMAKE_CURRENT_LIST_FILE}")

# The files of the UI folder, relative to it, sorted; hidden files and
# nested UIs (a subfolder with its own index.html) left out.
function(_keel_ui_files dir out)
  file(GLOB_RECURSE files LIST_DIRECTORIES false RELATIVE "${dir}" "${dir}/*")
  list(FILTER files EXCLUDE REGEX "(^|/)\\.")
  set(nested "${files}")
  list(FILTER nested INCLUDE REGEX "/index\\.html$")
  foreach(n IN LISTS nested)
    string(REGEX REPLACE "/index\\.html$" "" sub "${n}")
    string(REGEX REPLACE "([][+.*()^$?|\\\\])" "\\\\\\1" sub "${sub}")
    list(FILTER files EXCLUDE REGEX "^${sub}/")
  endforeach()
  list(SORT files)
  set(${out} "${files}" PARENT_SCOPE)
endfunction()

function(keel_embed_ui out_c ui_dir)
  cmake_parse_arguments(PARSE_ARGV 2 EMB "" "PREFIX" "")
  if(EMB_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "keel_embed_ui: unknown arguments ${EMB_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT EMB_PREFIX)
    set(EMB_PREFIX keel_ui)
  endif()
  if(NOT EMB_PREFIX MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "keel_embed_ui: PREFIX '${EMB_PREFIX}' is not a C identifier")
  endif()
  if(NOT IS_ABSOLUTE "${ui_dir}")
    set(ui_dir "${CMAKE_CURRENT_SOURCE_DIR}/${ui_dir}")
  endif()
  if(NOT IS_ABSOLUTE "${out_c}")
    set(out_c "${CMAKE_CURRENT_BINARY_DIR}/${out_c}")
  endif()
  if(NOT IS_DIRECTORY "${ui_dir}")
    message(FATAL_ERROR "keel_embed_ui: '${ui_dir}' is not a directory")
  endif()
  # Only to re-run the configure step when a file is added or removed; the
  # generator lists the folder itself.
  file(GLOB_RECURSE watched CONFIGURE_DEPENDS LIST_DIRECTORIES false "${ui_dir}/*")
  _keel_ui_files("${ui_dir}" files)
  set(deps "")
  foreach(f IN LISTS files)
    list(APPEND deps "${ui_dir}/${f}")
  endforeach()
  add_custom_command(
    OUTPUT "${out_c}"
    COMMAND "${CMAKE_COMMAND}" "-DUI_DIR=${ui_dir}" "-DOUT=${out_c}" "-DPREFIX=${EMB_PREFIX}"
            -P "${KEEL_EMBED_UI_SCRIPT}"
    DEPENDS ${deps} "${KEEL_EMBED_UI_SCRIPT}"
    COMMENT "Embedding the setup UI (${ui_dir})"
    VERBATIM)
endfunction()

# ---- generator (script mode) ------------------------------------------------

if(NOT CMAKE_SCRIPT_MODE_FILE OR NOT CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  return()
endif()
if(NOT DEFINED UI_DIR OR NOT DEFINED OUT)
  message(FATAL_ERROR "EmbedUI.cmake: pass -DUI_DIR=<ui folder> -DOUT=<file.c>")
endif()
if(NOT IS_DIRECTORY "${UI_DIR}")
  message(FATAL_ERROR "EmbedUI.cmake: '${UI_DIR}' is not a directory")
endif()
if(NOT DEFINED PREFIX OR PREFIX STREQUAL "")
  set(PREFIX keel_ui)
endif()
if(NOT PREFIX MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
  message(FATAL_ERROR "EmbedUI.cmake: PREFIX '${PREFIX}' is not a C identifier")
endif()

set(type_html "text/html; charset=utf-8")
set(type_js "text/javascript; charset=utf-8")
set(type_css "text/css; charset=utf-8")
set(type_svg "image/svg+xml")
set(type_png "image/png")
set(type_ico "image/x-icon")

# 16 bytes ("0x..,") to a line.
string(REPEAT "0x..," 16 sixteen)

_keel_ui_files("${UI_DIR}" files)
if(NOT files)
  message(FATAL_ERROR "EmbedUI.cmake: '${UI_DIR}' holds no files")
endif()
list(FIND files "index.html" has_index)
if(has_index EQUAL -1)
  message(FATAL_ERROR "EmbedUI.cmake: '${UI_DIR}' has no index.html")
endif()

set(arrays "")
set(table "")
set(i 0)
foreach(f IN LISTS files)
  if(NOT f MATCHES "^[A-Za-z0-9_-][A-Za-z0-9._/-]*$" OR f MATCHES "//")
    message(FATAL_ERROR "EmbedUI.cmake: '${f}': only [A-Za-z0-9._-] and '/' may appear in a UI file's path")
  endif()
  string(REGEX MATCH "[^.]+$" ext "${f}")
  string(TOLOWER "${ext}" ext)
  if(NOT f MATCHES "\\." OR NOT DEFINED type_${ext})
    message(FATAL_ERROR "EmbedUI.cmake: '${f}': unknown file type (known: .html .js .css .svg .png .ico)")
  endif()
  file(SIZE "${UI_DIR}/${f}" size)
  if(size GREATER KEEL_UI_FILE_MAX)
    message(FATAL_ERROR "EmbedUI.cmake: '${f}' is larger than ${KEEL_UI_FILE_MAX} bytes")
  endif()

  file(READ "${UI_DIR}/${f}" hex HEX)
  if(size EQUAL 0)
    set(bytes "    0x00")
  else()
    string(REGEX REPLACE "(..)" "0x\\1," bytes "${hex}")
    string(REGEX REPLACE "(${sixteen})" "\\1\n    " bytes "${bytes}")
    string(REGEX REPLACE "[ \n]+$" "" bytes "${bytes}")
    set(bytes "    ${bytes}")
  endif()
  string(APPEND arrays "/* ${f} (${size} bytes) */\nstatic const unsigned char ${PREFIX}_data_${i}[] = {\n${bytes}\n};\n\n")
  string(APPEND table "    {\"/${f}\", \"${type_${ext}}\", ${PREFIX}_data_${i}, ${size}},\n")
  math(EXPR i "${i} + 1")
endforeach()

set(c "/* Generated by cmake/EmbedUI.cmake from the files of ui/. Do not edit. */\n")
string(APPEND c "#include \"ui_assets.h\"\n\n")
if(NOT PREFIX STREQUAL "keel_ui")
  # ui_assets.h declares keel_ui's table only; another prefix is declared here.
  string(APPEND c "extern const keel_ui_asset_t ${PREFIX}_assets[];\nextern const size_t ${PREFIX}_assets_len;\n\n")
endif()
string(APPEND c "${arrays}")
string(APPEND c "const keel_ui_asset_t ${PREFIX}_assets[] = {\n${table}};\n\n")
string(APPEND c "const size_t ${PREFIX}_assets_len = ${i};\n")

# Write beside, then replace only when different, so an unchanged UI does not
# recompile keeld.
file(WRITE "${OUT}.tmp" "${c}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
