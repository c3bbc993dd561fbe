"""Classifies handwritten digits with a model the host shares (wasi:nn);
the Python twin of functions/classify-digits.

Input data: ``{"pixels": [64 values, 0 to 16]}`` for one 8x8 image, or a
list of such lists, which run as one inference.
Config: ``model`` (default ``digits``), ``input`` / ``output`` (default
``pixels`` / ``probabilities``), ``min_confidence`` (default 0).
Emits, per image, ``{"label": 7, "confidence": 0.98, "index": 0}``.
"""

import math

import brink
from brink import config, nn

PIXELS = 64
MAX_IMAGES = 1024


def rows(data):
    pixels = data.get("pixels") if isinstance(data, dict) else None
    if not isinstance(pixels, list) or not pixels:
        raise brink.InvalidEvent('expected {"pixels": [...]}')
    images = pixels if isinstance(pixels[0], list) else [pixels]
    if len(images) > MAX_IMAGES:
        raise brink.InvalidEvent(f"expected 1 to {MAX_IMAGES} images, got {len(images)}")
    flat = []
    for i, image in enumerate(images):
        if not isinstance(image, list) or len(image) != PIXELS:
            raise brink.InvalidEvent(f"image {i} is not {PIXELS} pixels")
        for v in image:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 16:
                raise brink.InvalidEvent(f"image {i} has pixel value {v!r}; values are 0 to 16")
        flat.extend(float(v) for v in image)
    return len(images), flat


@brink.handler
def handle(event: brink.Event):
    name = config.get("model") or "digits"
    min_confidence = config.get_or("min_confidence", 0.0, float)
    count, flat = rows(event.json())
    model = nn.Model.open(name)
    outputs = model.infer({config.get("input") or "pixels": nn.Tensor.f32([count, PIXELS], flat)})
    output = config.get("output") or "probabilities"
    if output not in outputs:
        raise brink.Internal(f"model `{name}` has no output `{output}`")
    probabilities = outputs[output].to_f32()
    if len(probabilities) % count:
        raise brink.Internal(f"model `{name}` returned {len(probabilities)} values for {count} images")
    classes = len(probabilities) // count
    out = []
    for index in range(count):
        label, confidence = nn.argmax(probabilities[index * classes : (index + 1) * classes]) or (0, 0.0)
        kind = "com.brink.digits.uncertain" if confidence < min_confidence else "com.brink.digits.classified"
        out.append(
            brink.Event(kind, event.source, subject=event.subject,
                        json={"label": label, "confidence": confidence, "index": index})
        )
    return out
