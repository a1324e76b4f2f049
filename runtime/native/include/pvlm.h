/* pvlm.h: the C ABI of the PersonVLM native runtime.
 *
 * Open an export bundle (manifest.json + ONNX graphs), describe person crops given as uint8
 * pixel buffers, free the results, close. Every function that can fail returns a pvlm_status;
 * PVLM_OK is 0, and on failure pvlm_last_error() gives a one-line message naming what is wrong
 * (valid until the next pvlm_* call on the same thread). Nothing throws or aborts across this
 * boundary.
 *
 * Threads: one opened bundle may be used by any number of threads at once (pvlm_describe,
 * pvlm_generate and pvlm_preprocess keep per-call state only); pvlm_close must not race them.
 */
#ifndef PVLM_H_
#define PVLM_H_

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define PVLM_API __attribute__((visibility("default")))
#else
#define PVLM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a struct below changes layout; pvlm_abi_version() says what the library was built with. */
#define PVLM_ABI_VERSION 2

typedef enum pvlm_status {
  PVLM_OK = 0,
  PVLM_ERR_ARGUMENT = 1,        /* a NULL pointer, a zero or negative size, a bad stride or option value */
  PVLM_ERR_BUNDLE_MISSING = 2,  /* no such directory, or no manifest.json in it */
  PVLM_ERR_MANIFEST = 3,        /* corrupt JSON, not a bundle manifest, an unknown format version, a bad field */
  PVLM_ERR_OUTSIDE_BUNDLE = 4,  /* a file the manifest names is not (or resolves, symlinks included, not) inside */
  PVLM_ERR_INTEGRITY = 5,       /* an artefact is missing, unreadable, or its sha256 differs from the manifest */
  PVLM_ERR_UNSUPPORTED = 6,     /* a precision the bundle lacks, graph inputs/outputs that differ from the
                                   manifest, a model this runtime cannot run */
  PVLM_ERR_LIMIT = 7,           /* a batch over max_batch, max_new_tokens over the bundle's limit */
  PVLM_ERR_BOX = 8,             /* a box with no area inside its frame, or a NaN coordinate */
  PVLM_ERR_RUNTIME = 9,         /* ONNX Runtime could not load or run a graph */
  PVLM_ERR_NO_MEMORY = 10,      /* an allocation failed */
  PVLM_ERR_INTERNAL = 11        /* a bug: please report it with the message */
} pvlm_status;

typedef enum pvlm_pixel_format {
  PVLM_PIXEL_RGB = 0,  /* 3 bytes per pixel */
  PVLM_PIXEL_BGR = 1,  /* 3 bytes per pixel (OpenCV's order) */
  PVLM_PIXEL_RGBA = 2, /* 4 bytes per pixel; the 4th is ignored (frame padding, not transparency) */
  PVLM_PIXEL_BGRA = 3, /* 4 bytes per pixel; the 4th is ignored */
  PVLM_PIXEL_GRAY = 4  /* 1 byte per pixel, copied to R, G and B */
} pvlm_pixel_format;

/* A region of a frame in pixels: x1, y1 (inclusive, floored) to x2, y2 (exclusive, ceiled), clipped to
 * the frame; a box with no area left after clipping is refused with PVLM_ERR_BOX. */
typedef struct pvlm_box {
  float x1, y1, x2, y2;
} pvlm_box;

/* One input: a uint8 HWC frame in host memory, and optionally the box to describe in it. */
typedef struct pvlm_image {
  const uint8_t *data;  /* row 0, column 0 */
  int32_t width;        /* pixels, >= 1 */
  int32_t height;       /* pixels, >= 1 */
  int32_t stride;       /* bytes from one row to the next; 0: width x bytes per pixel (packed) */
  int32_t format;       /* a pvlm_pixel_format */
  const pvlm_box *box;  /* NULL: the whole frame */
} pvlm_image;

/* Options of pvlm_open; fill with pvlm_options_init, then change what you need. */
typedef struct pvlm_options {
  uint32_t struct_size;   /* sizeof(pvlm_options), set by pvlm_options_init */
  const char *precision;  /* "fp32" (default) or a variant the bundle holds ("int8", "fp16") */
  const char *decoder;    /* "auto" (default): cross_ort + decoder_ort with the cache bound in place when the
                             bundle has them; "ort": insist on those; "portable": decoder.onnx */
  int32_t threads;        /* intra-op threads per graph; 0 (default): ONNX Runtime's choice */
  int32_t max_batch;      /* images per call; 0 (default): the bundle's limit */
  int32_t max_new_tokens; /* default tokens per description; 0 (default): the bundle's limit */
  int32_t verify;         /* nonzero (default): check every artefact's sha256 while opening */
  int32_t shared_threads; /* nonzero: ONNX Runtime's process-wide thread pool for every graph (created by the
                             first pvlm_open of the process; later opens use whatever that one made) */
  int32_t no_repeat_ngram_size; /* pvlm_describe's repetition guard: a row whose next token would repeat an
                                   n-gram of its text ends there; 10 (default, as
                                   runtime.decoding.DEFAULT_NO_REPEAT_NGRAM); 0: off */
  int32_t min_crop_width;  /* boxes narrower than this (pixels, after clipping) are refused with PVLM_ERR_BOX; */
  int32_t min_crop_height; /* -1 (default): 1/8 of the model's input width / height; 0: no minimum */
  int64_t encoder_chunk_pixels; /* the encoder runs a batch in equal chunks of at most this many input pixels (at
                                   least one image each): peak memory follows one chunk's activations. 0 (default):
                                   2 x 224 x 224; the Python runtime uses 8 x 224 x 224 (added in ABI version 2) */
} pvlm_options;

/* What an opened bundle runs; the strings live as long as the bundle. */
typedef struct pvlm_info {
  int32_t input_height, input_width; /* the encoder's input size (preprocess output) */
  int32_t max_batch;                 /* this opening's limit per call */
  int32_t max_new_tokens;            /* this opening's default */
  int32_t max_positions;             /* the bundle's position table: the most tokens a call may ask for */
  int32_t vocab_size;
  const char *precision;             /* "fp32", "int8", ... */
  const char *decoder;               /* the decoder graph the greedy loop runs: "decoder_ort" or "decoder" */
  const char *bundle_id;             /* 16 hex digits of the sha256 of manifest.json (as pvlm-describe --json) */
  const char *onnxruntime_version;   /* of the ONNX Runtime library loaded */
  int32_t shared_threads;            /* 1 when the sessions run on the process-wide pool */
  int32_t no_repeat_ngram_size;      /* pvlm_describe's repetition guard (0: off) */
  int32_t min_crop_width, min_crop_height; /* the smallest box pvlm_describe accepts, in pixels */
} pvlm_info;

/* Where a call's time went, in milliseconds; of the whole call (every image in it). */
typedef struct pvlm_timings {
  double preprocess_ms, encode_ms, decode_ms, total_ms;
  int32_t steps; /* decoder steps run */
  int32_t batch; /* images in the call */
} pvlm_timings;

/* One image's description. */
typedef struct pvlm_description {
  const char *text;       /* UTF-8, NUL-terminated: the tokens joined as the Python runtime joins them */
  const int32_t *tokens;  /* generated ids without BOS and EOS (with stop_at_eos == 0: every id, EOS included) */
  size_t n_tokens;
  int32_t ended;          /* 1 when the row stopped before the token limit: EOS, or the repetition guard */
} pvlm_description;

/* The result of one call: count descriptions in input order. Free with pvlm_results_free. */
typedef struct pvlm_results {
  size_t count;
  const pvlm_description *items;
  pvlm_timings timings;
} pvlm_results;

typedef struct pvlm_bundle pvlm_bundle; /* an opened bundle: sessions, vocabulary, limits */

/* The library's version ("0.1.0") and the ABI version it was built with (PVLM_ABI_VERSION). */
PVLM_API const char *pvlm_version(void);
PVLM_API int32_t pvlm_abi_version(void);

/* The message of this thread's last failed call ("" after a successful one). */
PVLM_API const char *pvlm_last_error(void);

/* "PVLM_ERR_BOX" for PVLM_ERR_BOX, ...; "PVLM_ERR_UNKNOWN" for a value not in pvlm_status. */
PVLM_API const char *pvlm_status_name(pvlm_status status);

/* Defaults: fp32, decoder auto, ONNX Runtime's threads, the bundle's limits, verify on, own pools,
 * no repetition guard, minimum crop 1/8 of the model's input size (the Python Describer's defaults). */
PVLM_API void pvlm_options_init(pvlm_options *options);

/* Read and check the bundle at bundle_dir (as the Python runtime does) and load its graphs into *out.
 * options may be NULL (defaults). On failure *out is NULL. */
PVLM_API pvlm_status pvlm_open(const char *bundle_dir, const pvlm_options *options, pvlm_bundle **out);

/* Free the sessions and everything the bundle holds; NULL is ignored. */
PVLM_API void pvlm_close(pvlm_bundle *bundle);

PVLM_API pvlm_status pvlm_info_get(const pvlm_bundle *bundle, pvlm_info *out);

/* Describe count images (1..max_batch) in one batch: preprocess, encoder, greedy decoding.
 * max_new_tokens: 0 for the opening's default, else 1..max_positions. Every input is checked before
 * any work; the first bad one fails the call with a message naming its index. */
PVLM_API pvlm_status pvlm_describe(pvlm_bundle *bundle, const pvlm_image *images, size_t count,
                                   int32_t max_new_tokens, pvlm_results **out);

/* The greedy loop on already preprocessed float32 pixels (count, 3, input_height, input_width), for
 * benchmarks and tests. stop_at_eos == 0 decodes exactly max_new_tokens per row (fixed work);
 * no_repeat_ngram_size 0 turns the repetition guard off (as Describer.generate_ids by default). */
PVLM_API pvlm_status pvlm_generate(pvlm_bundle *bundle, const float *pixels, size_t count,
                                   int32_t max_new_tokens, int32_t stop_at_eos, int32_t no_repeat_ngram_size,
                                   pvlm_results **out);

/* One image's encoder input: float32 (3, input_height, input_width) into out (out_len floats). The box, if
 * any, is clipped but not held to the minimum crop size (that is pvlm_describe's rule). */
PVLM_API pvlm_status pvlm_preprocess(const pvlm_bundle *bundle, const pvlm_image *image, float *out,
                                     size_t out_len);

/* Free a result; NULL is ignored. */
PVLM_API void pvlm_results_free(pvlm_results *results);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PVLM_H_ */
