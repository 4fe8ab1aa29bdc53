from ..emulator._images import (  # noqa: F401  (shim, removed in Phase B)
    SAMPLE_FACES,
    SAMPLE_SCENES,
    Face,
    Scene,
    draw_face,
    draw_scene,
    write_samples,
)
