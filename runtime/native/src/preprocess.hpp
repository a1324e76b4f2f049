// Pixel buffers -> the encoder's float32 input, giving the same numbers as runtime/preprocess.py:
// crop (clip_box), Pillow's bilinear resize of a uint8 RGB image (Resample.c, fixed point), then
// x / 255, minus mean, over std in float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bundle.hpp"
#include "pvlm.h"

namespace pvlm_core {

// A crop in pixels: x1, y1 inclusive; x2, y2 exclusive.
struct Rect {
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

// Check one input (index for messages) and return the region to describe: the box clipped to the frame
// (runtime.preprocess.clip_box), or the whole frame. Error PVLM_ERR_ARGUMENT or PVLM_ERR_BOX otherwise.
Rect check_image(const pvlm_image* image, size_t index);

// Error(PVLM_ERR_BOX) when a box's clipped region is narrower than min_width or shorter than min_height
// (Describer.describe_crops' min_crop); whole frames are not held to it.
void check_min_crop(const pvlm_image& image, const Rect& region, size_t index, int min_width, int min_height);

// Pillow's Image.resize((width, height), BILINEAR) of a packed uint8 RGB image (3 bytes per pixel), as Pillow
// 13 computes it (its order of the two passes included).
std::vector<uint8_t> resize_bilinear(const uint8_t* rgb, int src_width, int src_height, int width, int height);

// The region of image as float32 (3, p.height, p.width) into out.
void preprocess(const pvlm_image& image, const Rect& region, const Preprocess& p, float* out);

}  // namespace pvlm_core
