#include "preprocess.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

#include "error.hpp"

namespace pvlm_core {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's 8-bit fixed point: 22 fractional bits

int bytes_per_pixel(int32_t format) {
  switch (format) {
    case PVLM_PIXEL_RGB:
    case PVLM_PIXEL_BGR:
      return 3;
    case PVLM_PIXEL_RGBA:
    case PVLM_PIXEL_BGRA:
      return 4;
    case PVLM_PIXEL_GRAY:
      return 1;
    default:
      return 0;
  }
}

// A coordinate as Python's repr prints a float ("10.0", "0.10000000149011612", "nan", "inf").
std::string number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest round trip, as repr
  std::string s(buf, res.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// Pillow's precompute_coeffs for the bilinear filter (support 1), box (0, in_size): per output pixel the
// first input pixel, the count, and ksize double weights normalised to sum 1.
int precompute_coeffs(int in_size, int out_size, std::vector<int>& bounds, std::vector<double>& kk) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  double scale = static_cast<double>(in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = 1.0 * filterscale;
  int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  kk.assign(size_t(out_size) * ksize, 0.0);
  bounds.assign(size_t(out_size) * 2, 0);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &kk[size_t(xx) * ksize];
    for (int x = 0; x < xmax; ++x) {
      double t = (x + xmin - center + 0.5) * ss;
      if (t < 0.0) t = -t;
      double w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    bounds[size_t(xx) * 2] = xmin;
    bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return ksize;
}

std::vector<int32_t> fixed_point(const std::vector<double>& kk) {
  std::vector<int32_t> out(kk.size());
  for (size_t i = 0; i < kk.size(); ++i)
    out[i] = kk[i] < 0 ? static_cast<int32_t>(-0.5 + kk[i] * (1 << kPrecisionBits))
                       : static_cast<int32_t>(0.5 + kk[i] * (1 << kPrecisionBits));
  return out;
}

inline uint8_t clip8(int32_t in) {
  int32_t v = in >> kPrecisionBits;  // arithmetic shift, as Pillow's lookup table index
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

Rect check_image(const pvlm_image* image, size_t index) {
  std::string name = "input " + std::to_string(index);
  if (image == nullptr) throw Error(PVLM_ERR_ARGUMENT, name + ": the pvlm_image pointer is NULL");
  if (image->data == nullptr) throw Error(PVLM_ERR_ARGUMENT, name + ": data is NULL");
  int bpp = bytes_per_pixel(image->format);
  if (bpp == 0)
    throw Error(PVLM_ERR_ARGUMENT, name + ": unknown pixel format " + std::to_string(image->format) +
                                       " (PVLM_PIXEL_RGB, _BGR, _RGBA, _BGRA or _GRAY)");
  if (image->width < 1 || image->height < 1)
    throw Error(PVLM_ERR_ARGUMENT, name + ": width and height must be >= 1, got " + std::to_string(image->width) +
                                       "x" + std::to_string(image->height));
  int64_t packed = int64_t(image->width) * bpp;
  if (image->stride < 0 || (image->stride != 0 && image->stride < packed))
    throw Error(PVLM_ERR_ARGUMENT, name + ": stride " + std::to_string(image->stride) + " is less than width x " +
                                       std::to_string(bpp) + " = " + std::to_string(packed) + " bytes");
  Rect r{0, 0, image->width, image->height};
  if (image->box == nullptr) return r;
  const pvlm_box& b = *image->box;
  double v[4] = {b.x1, b.y1, b.x2, b.y2};
  std::string shown = "(" + number(v[0]) + ", " + number(v[1]) + ", " + number(v[2]) + ", " + number(v[3]) + ")";
  for (double c : v)  // NaN or inf would otherwise clip silently to a frame edge
    if (!std::isfinite(c))
      throw Error(PVLM_ERR_BOX, "box " + std::to_string(index) + ": coordinates must be finite numbers, got " + shown);
  auto clip = [](double c, int hi) { return static_cast<int>(std::max(0.0, std::min(double(hi), c))); };
  r = {clip(std::floor(v[0]), image->width), clip(std::floor(v[1]), image->height), clip(std::ceil(v[2]), image->width),
       clip(std::ceil(v[3]), image->height)};
  if (r.x2 <= r.x1 || r.y2 <= r.y1)
    throw Error(PVLM_ERR_BOX, "box " + std::to_string(index) + " " + shown + ": no area inside the " +
                                  std::to_string(image->width) + "x" + std::to_string(image->height) + " frame");
  return r;
}

namespace {

// One horizontal pass: rows [offset, offset + rows) of a packed RGB image src_width wide -> width wide.
std::vector<uint8_t> horizontal_pass(const uint8_t* src, int src_width, int offset, int rows, int width) {
  constexpr int C = 3;
  std::vector<int> bounds;
  std::vector<double> kk;
  int ksize = precompute_coeffs(src_width, width, bounds, kk);
  std::vector<int32_t> k = fixed_point(kk);
  std::vector<uint8_t> out(size_t(width) * rows * C);
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* line = src + size_t(yy + offset) * src_width * C;
    for (int xx = 0; xx < width; ++xx) {
      int xmin = bounds[size_t(xx) * 2], xmax = bounds[size_t(xx) * 2 + 1];
      const int32_t* kx = &k[size_t(xx) * ksize];
      int32_t ss0 = 1 << (kPrecisionBits - 1), ss1 = ss0, ss2 = ss0;
      for (int x = 0; x < xmax; ++x) {
        const uint8_t* p = line + size_t(x + xmin) * C;
        ss0 += p[0] * kx[x];
        ss1 += p[1] * kx[x];
        ss2 += p[2] * kx[x];
      }
      uint8_t* o = &out[(size_t(yy) * width + xx) * C];
      o[0] = clip8(ss0), o[1] = clip8(ss1), o[2] = clip8(ss2);
    }
  }
  return out;
}

// One vertical pass: a packed RGB image width wide -> height rows, with precomputed bounds (ymin relative
// to src's first row) and weights.
std::vector<uint8_t> vertical_pass(const uint8_t* src, int width, int height, const std::vector<int>& bounds,
                                   const std::vector<double>& kk, int ksize) {
  constexpr int C = 3;
  std::vector<int32_t> k = fixed_point(kk);
  std::vector<uint8_t> out(size_t(width) * height * C);
  for (int yy = 0; yy < height; ++yy) {
    const int32_t* ky = &k[size_t(yy) * ksize];
    int ymin = bounds[size_t(yy) * 2], ymax = bounds[size_t(yy) * 2 + 1];
    for (int xx = 0; xx < width; ++xx) {
      int32_t ss0 = 1 << (kPrecisionBits - 1), ss1 = ss0, ss2 = ss0;
      for (int y = 0; y < ymax; ++y) {
        const uint8_t* p = src + (size_t(y + ymin) * width + xx) * C;
        ss0 += p[0] * ky[y];
        ss1 += p[1] * ky[y];
        ss2 += p[2] * ky[y];
      }
      uint8_t* o = &out[(size_t(yy) * width + xx) * C];
      o[0] = clip8(ss0), o[1] = clip8(ss1), o[2] = clip8(ss2);
    }
  }
  return out;
}

}  // namespace

void check_min_crop(const pvlm_image& image, const Rect& r, size_t index, int min_width, int min_height) {
  if (image.box == nullptr) return;
  const int w = r.x2 - r.x1, h = r.y2 - r.y1;
  if (h < min_height || w < min_width)
    throw Error(PVLM_ERR_BOX, "box " + std::to_string(index) + ": " + std::to_string(w) + "x" + std::to_string(h) +
                                  " px is smaller than the minimum crop " + std::to_string(min_width) + "x" +
                                  std::to_string(min_height) + " (width x height; pvlm_options.min_crop_width/height)");
}

std::vector<uint8_t> resize_bilinear(const uint8_t* rgb, int src_width, int src_height, int width, int height) {
  constexpr int C = 3;
  const bool need_horizontal = width != src_width, need_vertical = height != src_height;
  if (!need_horizontal && !need_vertical) return {rgb, rgb + size_t(width) * height * C};
  std::vector<int> bounds_v;
  std::vector<double> kk_v;
  int ksize_v = precompute_coeffs(src_height, height, bounds_v, kk_v);
  if (!need_horizontal) return vertical_pass(rgb, src_width, height, bounds_v, kk_v, ksize_v);
  if (!need_vertical) return horizontal_pass(rgb, src_width, 0, src_height, width);
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice the pixels the width
  // does (ImagingResampleInner); the two orders round differently, so the order is part of the result.
  if (height < src_height && (src_height - height) > 2 * (src_width - width)) {
    std::vector<uint8_t> temp = vertical_pass(rgb, src_width, height, bounds_v, kk_v, ksize_v);
    return horizontal_pass(temp.data(), src_width, 0, height, width);
  }
  // horizontal first, over the rows the vertical pass reads only
  int ybox_first = bounds_v[0];
  int ybox_last = bounds_v[size_t(height) * 2 - 2] + bounds_v[size_t(height) * 2 - 1];
  for (int i = 0; i < height; ++i) bounds_v[size_t(i) * 2] -= ybox_first;
  std::vector<uint8_t> temp = horizontal_pass(rgb, src_width, ybox_first, ybox_last - ybox_first, width);
  return vertical_pass(temp.data(), width, height, bounds_v, kk_v, ksize_v);
}

void preprocess(const pvlm_image& image, const Rect& region, const Preprocess& p, float* out) {
  const int bpp = bytes_per_pixel(image.format);
  const size_t stride = image.stride ? size_t(image.stride) : size_t(image.width) * bpp;
  const int cw = region.x2 - region.x1, ch = region.y2 - region.y1;
  // the region as packed RGB (to_rgb: BGR swapped, a 4th byte ignored, gray copied to R, G and B)
  std::vector<uint8_t> rgb(size_t(cw) * ch * 3);
  const bool bgr = image.format == PVLM_PIXEL_BGR || image.format == PVLM_PIXEL_BGRA;
  for (int y = 0; y < ch; ++y) {
    const uint8_t* line = image.data + size_t(region.y1 + y) * stride + size_t(region.x1) * bpp;
    uint8_t* o = &rgb[size_t(y) * cw * 3];
    for (int x = 0; x < cw; ++x, line += bpp, o += 3) {
      if (bpp == 1) {
        o[0] = o[1] = o[2] = line[0];
      } else {
        o[0] = line[bgr ? 2 : 0], o[1] = line[1], o[2] = line[bgr ? 0 : 2];
      }
    }
  }
  std::vector<uint8_t> resized = resize_bilinear(rgb.data(), cw, ch, p.width, p.height);
  const size_t plane = size_t(p.width) * p.height;
  for (int c = 0; c < 3; ++c) {
    const float mean = p.mean[c], std = p.std[c];
    float* dst = out + c * plane;
    for (size_t i = 0; i < plane; ++i) {
      float v = static_cast<float>(resized[i * 3 + c]) / 255.0f;  // float32 throughout, as numpy computes it
      dst[i] = (v - mean) / std;
    }
  }
}

}  // namespace pvlm_core
