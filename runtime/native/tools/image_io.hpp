// PNG and JPEG files -> 8-bit RGB pixels, converted as runtime/preprocess.py's to_rgb converts Pillow's
// modes: alpha composited on white (Pillow's alpha_composite arithmetic), 16-bit gray / 257, other
// 16-bit samples by their high byte, palette transparency honoured, gray copied to R, G and B, and turned
// upright by the EXIF orientation (JPEG APP1, PNG eXIf), as PIL.ImageOps.exif_transpose.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace pvlm_cli {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // packed RGB, width * 3 bytes per row
};

// Why a file could not be read, worded as the Python runtime words it ("file not found", ...).
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Decode path; more than max_pixels pixels is refused from the header, before decoding.
RgbImage read_image(const std::string& path, int64_t max_pixels);

}  // namespace pvlm_cli
