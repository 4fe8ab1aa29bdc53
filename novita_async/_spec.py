"""The documented contract of the image API (InstantID and the v3 image tasks), transcribed once.

Every range, enum and default below comes from the API's own documentation (``instant-id-api.txt``,
and ``api-facts-v3.md`` for the v3 tasks) or, where that is silent, from the official SDK. The
client's models validate against this table and the emulator enforces the same table on the wire,
so a change here is a change to both.
"""

from __future__ import annotations

from typing import Final

import attrs

RECOMMENDED_MODEL: Final = "sdxlUnstableDiffusers_v8HEAVENSWRATH_133813.safetensors"

SAMPLERS: Final = (
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE",
    "DPM fast", "DPM adaptive", "LMS Karras", "DPM2 Karras", "DPM2 a Karras", "DPM++ 2S a Karras",
    "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "PLMS", "UniPC",
)  # fmt: skip

IMAGE_TYPES: Final = ("png", "jpeg", "webp")

CONTROLNET_PREPROCESSORS: Final = (
    "none", "canny", "depth", "depth_leres", "depth_leres++", "hed", "hed_safe", "mediapipe_face",
    "mlsd", "normal_map", "openpose", "openpose_hand", "openpose_face", "openpose_faceonly",
    "openpose_full", "clip_vision", "color", "pidinet", "pidinet_safe", "pidinet_sketch",
    "pidinet_scribble", "scribble_xdog", "scribble_hed", "segmentation", "threshold", "depth_zoe",
    "normal_bae", "oneformer_coco", "oneformer_ade20k", "lineart", "lineart_coarse",
    "lineart_anime", "lineart_standard", "shuffle", "tile_resample", "invert",
    "lineart_anime_denoise", "reference_only", "reference_adain", "reference_adain+attn",
)  # fmt: skip

MODEL_TYPES: Final = ("checkpoint", "lora", "vae", "controlnet", "upscaler", "textualinversion")

MAX_LORAS: Final = 5


@attrs.frozen
class Range:
    """An inclusive numeric range; ``high`` None means unbounded above."""

    low: float
    high: float | None

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return value >= self.low and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        return f">= {self.low:g}" if self.high is None else f"[{self.low:g}, {self.high:g}]"


# Numeric fields of the request: (range, is_integer).
NUMERIC_FIELDS: Final[dict[str, tuple[Range, bool]]] = {
    "width": (Range(128, 2048), True),
    "height": (Range(128, 2048), True),
    "image_num": (Range(1, 4), True),
    "steps": (Range(1, 100), True),
    "guidance_scale": (Range(1, 30), False),
    "seed": (Range(-1, None), True),
    "id_strength": (Range(0, 1.5), False),
    "adapter_strength": (Range(0, 1.5), False),
    "clip_skip": (Range(1, 12), True),
    "control_guidance_start": (Range(0, 1), False),
    "control_guidance_end": (Range(0, 1), False),
    # Novita's shared `extra` block: 0 (strict) .. 2 (lenient).
    "nsfw_detection_level": (Range(0, 2), True),
}

PROMPT_LENGTH: Final = Range(1, 1024)

REQUIRED_FIELDS: Final = (
    "model_name", "face_image_assets_ids", "ref_image_assets_ids", "prompt", "width", "height",
    "image_num", "steps", "guidance_scale", "sampler_name",
)  # fmt: skip

# The answer to "which SDXL checkpoints may model_name name": the seed's list, plus the model its
# own example request uses.
_SDXL_STEMS = """
albedobaseXL_v04_130099 altxl_v60_146691 animeArtDiffusionXL_alpha2_91872
animeArtDiffusionXL_alpha3_93120 animeIllustDiffusion_v04_117809 breakdomainxl_V05g_124265
brixlAMustInYour_v40Dagobah_145992 cinemaxAlphaSDXLCinema_alpha1_107473
cineroXLPhotomatic_v12aPHENO_137703 clearhungAnimeXL_v10_117716
copaxTimelessxlSDXL1_colorfulV2_100729 counterfeitxl__98184 counterfeitxl_v10_108721
crystalClearXL_ccxl_97637 dreamshaperXL09Alpha_alpha2Xl10_91562
dynavisionXLAllInOneStylized_alpha036FP16Bakedvae_99980
dynavisionXLAllInOneStylized_beta0411Bakedvae_109970
dynavisionXLAllInOneStylized_release0534bakedvae_129001 fenrisxl_145_134980
foddaxlPhotorealism_v45_122788 formulaxl_v10_104889 juggernautXL_version2_113240
juggernautXL_version5_126522 kohakuXL_alpha7_111843 LahMysteriousSDXL_v40_122478
leosamsHelloworldSDXLModel_helloworldSDXL10_112178 mbbxlUltimate_v10RC_94686
moefusionSDXL_v10_114018 nightvisionXLPhotorealisticPortrait_beta0681Bakedvae_108833
nightvisionXLPhotorealisticPortrait_beta0702Bakedvae_113098
nightvisionXLPhotorealisticPortrait_release0770Bakedvae_154525 novaPrimeXL_v10_107899
pixelwave_v10_117722 protovisionXLHighFidelity3D_beta0520Bakedvae_106612
protovisionXLHighFidelity3D_release0620Bakedvae_131308
protovisionXLHighFidelity3D_release0630Bakedvae_154359 realismEngineSDXL_v05b_131513
realismEngineSDXL_v10_136287 realisticStockPhoto_v10_115618 RealitiesEdgeXL_4_122673
realvisxlV20_v20Bakedvae_129156 riotDiffusionXL_v20_139293 roxl_v10_109354 sd_xl_base_0.9
sd_xl_base_1.0 sdxlNijiSpecial_sdxlNijiSE_115638 sdxlNijiV3_sdxlNijiV3_104571
sdxlNijiV51_sdxlNijiV51_112807 sd_xl_refiner_1.0 sdxlUnstableDiffusers_v8HEAVENSWRATH_133813
sdXL_v10Refiner_91495 sdxlYamersAnimeUltra_yamersAnimeV3_121537 shikianimexl_v10_93788
stable-diffusion-xl-1.0-inpainting-0.1 stable-diffusion-xl-base-1.0 theTalosProject_v10_117893
thinkdiffusionxl_v10_145931 voidnoisecorexl_r1486_150780 wlopArienwlopstylexl_v10_101973
wlopSTYLEXL_v2_126171 xl13AsmodeusSFWNSFW_v22BakedVAE_111954 xxmix9realisticsdxl_v10_123235
zavychromaxl_b2_103298 zavychromaxl_v21_129006 sdxlUnstableDiffusers_v11_216694
"""
SDXL_CHECKPOINTS: Final = tuple(f"{stem}.safetensors" for stem in _SDXL_STEMS.split())

# Task statuses as the service spells them.
STATUS_QUEUED: Final = "TASK_STATUS_QUEUED"
STATUS_PROCESSING: Final = "TASK_STATUS_PROCESSING"
STATUS_SUCCEED: Final = "TASK_STATUS_SUCCEED"
STATUS_FAILED: Final = "TASK_STATUS_FAILED"

# --- the v3 image tasks: txt2img, img2img, inpainting, upscale (docs/api-facts-v3.md) ---------

V3_IMAGE_NUM_MAX: Final = 8
MAX_EMBEDDINGS: Final = 5
MAX_IP_ADAPTERS: Final = 1

UPSCALE_MODELS: Final = ("RealESRGAN_x4plus_anime_6B", "RealESRNet_x4plus", "4x-UltraSharp")
HIRES_UPSCALERS: Final = ("RealESRGAN_x4plus_anime_6B", "RealESRNet_x4plus", "Latent")
IP_ADAPTER_MODELS: Final = ("ip-adapter_sd15.bin", "ip-adapter_sdxl.bin")
WEBHOOK_TEST_STATUSES: Final = (STATUS_SUCCEED, STATUS_FAILED)

# The v3 reference's ControlNet preprocessors (not the older WebUI list InstantID takes).
V3_CONTROLNET_PREPROCESSORS: Final = (
    "scribble_hed", "softedge_hed", "scribble_hedsafe", "softedge_hedsafe", "depth_midas", "mlsd",
    "openpose", "openpose_face", "openpose_faceonly", "openpose_full", "openpose_hand", "dwpose",
    "scribble_pidinet", "softedge_pidinet", "scribble_pidsafe", "softedge_pidsafe", "normal_bae",
    "lineart_coarse", "lineart_realistic", "lineart_anime", "lineart", "depth_zoe", "shuffle",
    "mediapipe_face", "canny", "depth", "depth_leres", "depth_leres++",
)  # fmt: skip

# Numeric fields of the v3 image requests and their nested parts: (range, is_integer).
V3_NUMERIC_FIELDS: Final[dict[str, tuple[Range, bool]]] = {
    "width": (Range(128, 2048), True),
    "height": (Range(128, 2048), True),
    "image_num": (Range(1, V3_IMAGE_NUM_MAX), True),
    "steps": (Range(1, 100), True),
    "guidance_scale": (Range(1, 30), False),
    "seed": (Range(-1, None), True),
    "clip_skip": (Range(1, 12), True),
    "strength": (Range(0, 1), False),
    "guidance_start": (Range(0, 1), False),
    "guidance_end": (Range(0, 1), False),
    "target_width": (Range(128, 4096), True),
    "target_height": (Range(128, 4096), True),
    "switch_at": (Range(0, 1), False),
    "mask_blur": (Range(0, 64), True),
    "inpainting_full_res": (Range(0, 1), True),
    "inpainting_full_res_padding": (Range(0, 256), True),
    "inpainting_mask_invert": (Range(0, 1), True),
    "initial_noise_multiplier": (Range(0, 1.5), False),
    "nsfw_detection_level": (Range(0, 2), True),
}

# upscale's scale_factor: greater than 1, at most 4 (the low end is exclusive).
SCALE_FACTOR_MIN_EXCLUSIVE: Final = 1.0
SCALE_FACTOR_MAX: Final = 4.0

_MB: Final = 1024 * 1024


@attrs.frozen
class InputLimits:
    """What one inline input image may be: its file's bytes, its pixels, its longest side."""

    max_bytes: int
    max_pixels: int | None = None
    max_width: int | None = None
    max_height: int | None = None

    def __str__(self) -> str:
        parts = [f"at most {self.max_bytes // _MB} MB"]
        if self.max_pixels is not None:
            parts.append(f"{self.max_pixels} pixels")
        if self.max_width is not None:
            parts.append(f"{self.max_width}x{self.max_height}")
        return ", ".join(parts)


# "16 MP" read as 4096 x 4096 pixels and "MB" as MiB: the docs give no finer figure.
_16_MP: Final = 4096 * 4096
IMG2IMG_INPUT: Final = InputLimits(max_bytes=10 * _MB, max_pixels=_16_MP)
INPAINTING_INPUT: Final = InputLimits(max_bytes=30 * _MB, max_pixels=_16_MP)
UPSCALE_INPUT: Final = InputLimits(max_bytes=30 * _MB, max_width=2048, max_height=2048)

# Default per-account rate limits, images per minute [D] (accounts may have higher ones).
V3_DEFAULT_IMAGES_PER_MINUTE: Final = {
    "txt2img": 20,
    "img2img": 10,
    "inpainting": 10,
    "upscale": 20,
}

# GET /v3/user's credit_balance is in 1/10,000 USD.
CREDIT_UNITS_PER_DOLLAR: Final = 10_000
