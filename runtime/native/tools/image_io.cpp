#include "image_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <jpeglib.h>
#include <png.h>

namespace pvlm_cli {
namespace {

// What a decoder hands back before the conversion to RGB: samples as the file stores them after
// libpng's / libjpeg's expansion (palette -> RGB(A), low bit depths -> 8 bits).
struct Decoded {
  int width = 0, height = 0, channels = 0;  // 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
  bool gray16 = false;                      // 16-bit big-endian gray samples (Pillow's I;16)
  std::vector<uint8_t> samples;
  std::vector<uint8_t*> rows;
  char message[JMSG_LENGTH_MAX > 256 ? JMSG_LENGTH_MAX : 256] = {0};
  bool too_many_pixels = false;
  std::vector<uint8_t> exif;  // the EXIF block (TIFF header onwards), when the file has one
};

// Pillow's ImagingAlphaComposite of (c, a) over opaque white, 7 extra bits of precision.
inline uint8_t over_white(uint32_t c, uint32_t a) {
  constexpr uint32_t kBits = 7, dst = 255, dst_a = 255;
  if (a == 0) return uint8_t(dst);
  uint32_t blend = dst_a * (255 - a);
  uint32_t outa255 = a * 255 + blend;
  uint32_t coef1 = a * 255 * 255 * (1u << kBits) / outa255;
  uint32_t coef2 = 255 * (1u << kBits) - coef1;
  uint32_t tmp = c * coef1 + dst * coef2 + (0x80u << kBits);
  return uint8_t((((tmp >> 8) + tmp) >> 8) >> kBits);
}

// ---- PNG: libpng reports errors by longjmp, so this frame holds no object with a destructor.
void png_fail(png_structp png, png_const_charp msg) {
  auto* d = static_cast<Decoded*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof d->message, "%s", msg);
  std::longjmp(png_jmpbuf(png), 1);
}

void png_quiet(png_structp, png_const_charp) {}

bool decode_png(FILE* f, int64_t max_pixels, Decoded* d) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, png_fail, png_quiet);
  if (png == nullptr) return std::snprintf(d->message, sizeof d->message, "out of memory"), false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return std::snprintf(d->message, sizeof d->message, "out of memory"), false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_init_io(png, f);
  png_read_info(png, info);
  d->width = int(png_get_image_width(png, info));
  d->height = int(png_get_image_height(png, info));
  if (int64_t(d->width) * d->height > max_pixels) {
    d->too_many_pixels = true;
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  d->gray16 = type == PNG_COLOR_TYPE_GRAY && depth == 16;
  if (type == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
    // Pillow honours a palette's transparency (P -> RGBA); a colour key on gray or RGB images it ignores
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  }
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16 && !d->gray16) png_set_strip_16(png);  // Pillow's RGB;16B, LA;16B, ...: the high byte
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  d->channels = png_get_channels(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  d->samples.resize(rowbytes * size_t(d->height));
  d->rows.resize(size_t(d->height));
  for (int y = 0; y < d->height; ++y) d->rows[size_t(y)] = d->samples.data() + rowbytes * size_t(y);
  png_read_image(png, d->rows.data());
  png_read_end(png, info);  // an eXIf chunk may follow the image data
  png_uint_32 exif_size = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &exif_size, &exif) && exif != nullptr) d->exif.assign(exif, exif + exif_size);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// ---- JPEG: libjpeg's default error handler exits the process; this one jumps back instead.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  Decoded* out;
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->out->message);
  std::longjmp(err->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}

bool decode_jpeg(FILE* f, int64_t max_pixels, Decoded* d) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_quiet;
  err.out = d;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next)
    if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0) {
      d->exif.assign(m->data, m->data + m->data_length);  // the first Exif block, as Pillow keeps it
      break;
    }
  d->width = int(cinfo.image_width);
  d->height = int(cinfo.image_height);
  if (int64_t(d->width) * d->height > max_pixels) {
    d->too_many_pixels = true;
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(d->message, sizeof d->message, "CMYK JPEG (convert it to RGB; pvlm-describe-native reads gray and RGB JPEG)");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // libjpeg's defaults (ISLOW IDCT, fancy upsampling), as Pillow decodes
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  d->channels = cinfo.output_components;
  size_t rowbytes = size_t(cinfo.output_width) * size_t(cinfo.output_components);
  d->samples.resize(rowbytes * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = d->samples.data() + rowbytes * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// The EXIF orientation (1..8; 1 when absent or unreadable: a damaged block leaves the pixels as stored).
int exif_orientation(std::vector<uint8_t> exif) {
  if (exif.size() >= 6 && std::memcmp(exif.data(), "Exif\0\0", 6) == 0) exif.erase(exif.begin(), exif.begin() + 6);
  const size_t n = exif.size();
  if (n < 8) return 1;
  const bool le = exif[0] == 'I' && exif[1] == 'I';
  if (!le && !(exif[0] == 'M' && exif[1] == 'M')) return 1;
  auto u16 = [&](size_t at) { return le ? uint32_t(exif[at]) | uint32_t(exif[at + 1]) << 8 : uint32_t(exif[at]) << 8 | exif[at + 1]; };
  auto u32 = [&](size_t at) { return le ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2); };
  if (u16(2) != 42) return 1;
  size_t ifd = u32(4);
  if (ifd + 2 > n) return 1;
  size_t count = u16(ifd);
  for (size_t i = 0; i < count; ++i) {
    size_t e = ifd + 2 + 12 * i;
    if (e + 12 > n) return 1;
    if (u16(e) == 0x0112 && u16(e + 2) == 3 && u32(e + 4) >= 1) {  // Orientation, SHORT
      uint32_t v = u16(e + 8);
      return v >= 1 && v <= 8 ? int(v) : 1;
    }
  }
  return 1;
}

// PIL.ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
// 7 transverse, 8 rotate 90 counter-clockwise.
RgbImage upright(RgbImage in, int orientation) {
  if (orientation <= 1) return in;
  const int W = in.width, H = in.height;
  const bool swap = orientation >= 5;
  RgbImage out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = W - 1 - x; break;
        case 3: sx = W - 1 - x, sy = H - 1 - y; break;
        case 4: sy = H - 1 - y; break;
        case 5: sx = y, sy = x; break;
        case 6: sx = y, sy = H - 1 - x; break;
        case 7: sx = W - 1 - y, sy = H - 1 - x; break;
        case 8: sx = W - 1 - y, sy = x; break;
      }
      std::memcpy(&out.pixels[(size_t(y) * out.width + x) * 3], &in.pixels[(size_t(sy) * W + sx) * 3], 3);
    }
  return out;
}

RgbImage to_rgb(const Decoded& d) {
  RgbImage out;
  out.width = d.width;
  out.height = d.height;
  const size_t n = size_t(d.width) * size_t(d.height);
  out.pixels.resize(n * 3);
  uint8_t* o = out.pixels.data();
  const uint8_t* s = d.samples.data();
  for (size_t i = 0; i < n; ++i, o += 3) {
    if (d.gray16) {  // runtime.preprocess._gray_to_uint8: I;16 samples / 257, rounded
      double v = double(uint32_t(s[2 * i]) << 8 | s[2 * i + 1]) / 257.0;
      o[0] = o[1] = o[2] = uint8_t(std::nearbyint(v));
    } else if (d.channels == 1) {
      o[0] = o[1] = o[2] = s[i];
    } else if (d.channels == 2) {
      o[0] = o[1] = o[2] = over_white(s[2 * i], s[2 * i + 1]);
    } else if (d.channels == 3) {
      o[0] = s[3 * i], o[1] = s[3 * i + 1], o[2] = s[3 * i + 2];
    } else {
      uint8_t a = s[4 * i + 3];
      for (int c = 0; c < 3; ++c) o[c] = over_white(s[4 * i + c], a);
    }
  }
  return out;
}

// runtime.preprocess.open_regular_file: a regular file opened non-blocking, refused otherwise (a FIFO
// would block the open, a device never ends), checked again on what was opened.
FILE* open_regular_file(const std::string& path) {
  auto kind = [](mode_t mode) -> std::string {
    if (S_ISREG(mode)) return "";
    if (S_ISDIR(mode)) return "is a directory";
    if (S_ISFIFO(mode)) return "is a FIFO, not a regular file";
    if (S_ISCHR(mode)) return "is a character device, not a regular file";
    if (S_ISBLK(mode)) return "is a block device, not a regular file";
    if (S_ISSOCK(mode)) return "is a socket, not a regular file";
    return "is a special file, not a regular file";
  };
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw ImageError("file not found");
    throw ImageError(std::string("cannot open (") + std::strerror(errno) + ")");
  }
  if (!kind(st.st_mode).empty()) throw ImageError(kind(st.st_mode));
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) throw ImageError(std::string("cannot open (") + std::strerror(errno) + ")");
  if (::fstat(fd, &st) != 0 || !kind(st.st_mode).empty()) {
    std::string why = kind(st.st_mode);
    ::close(fd);
    throw ImageError(why.empty() ? "cannot open" : why);
  }
  FILE* f = ::fdopen(fd, "rb");
  if (f == nullptr) {
    ::close(fd);
    throw ImageError("cannot open");
  }
  return f;
}

}  // namespace

RgbImage read_image(const std::string& path, int64_t max_pixels) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(open_regular_file(path), &std::fclose);
  unsigned char magic[8] = {0};
  size_t got = std::fread(magic, 1, sizeof magic, f.get());
  std::rewind(f.get());
  auto d = std::make_unique<Decoded>();
  bool ok;
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
    ok = decode_png(f.get(), max_pixels, d.get());
  } else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    ok = decode_jpeg(f.get(), max_pixels, d.get());
  } else {
    throw ImageError("not a readable image (pvlm-describe-native reads PNG and JPEG files)");
  }
  if (d->too_many_pixels) {
    int64_t n = int64_t(d->width) * d->height;
    throw ImageError(std::to_string(d->width) + "x" + std::to_string(d->height) + " is " + std::to_string(n) +
                     " pixels, more than the " + std::to_string(max_pixels) + " pixel limit (max_pixels)");
  }
  if (!ok) throw ImageError(std::string("not a readable image (") + d->message + ")");
  if (d->width == 0 || d->height == 0) throw ImageError("empty image");
  return upright(to_rgb(*d), exif_orientation(d->exif));
}

}  // namespace pvlm_cli
