/*
 * keeld without the setup UI (KEEL_WITH_SETUP_UI=OFF,
 * docs/internals/build-profiles.md): an empty asset table, so every path
 * outside /api/v1/ answers 404 and the API alone remains (5.6-6).
 */
#include "ui_assets.h"

const keel_ui_asset_t keel_ui_assets[1] = {{NULL, NULL, NULL, 0}};
const size_t keel_ui_assets_len = 0;
