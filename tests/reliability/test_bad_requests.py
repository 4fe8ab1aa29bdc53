"""Bad request fields are refused before anything goes on the wire, each naming its field.

Hypothesis draws the values; the emulator runs on a portal thread for the whole module so that each
example is one quick call, and its request counter proves nothing was uploaded or submitted.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from novita_async import InstantIDRequest, NovitaClient, ValidationError
from novita_async._spec import NUMERIC_FIELDS, PROMPT_LENGTH, SAMPLERS
from novita_async.emulator import Emulator, EmulatorConfig

from .checks import API_KEY

_REQUEST_NUMBERS = {
    name: spec for name, spec in NUMERIC_FIELDS.items() if name != "nsfw_detection_level"
}
REQUIRED = ("width", "height", "image_num", "steps", "guidance_scale", "sampler_name")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class Service:
    """An emulator and a client living on a portal thread's event loop."""

    def __init__(
        self, portal: anyio.from_thread.BlockingPortal, emu: Emulator, client: NovitaClient
    ) -> None:
        self.portal, self.emu, self.client = portal, emu, client
        self.png = _png()

    def requests(self) -> int:
        stats = self.emu.stats()
        return sum(stats.count(route) for route in stats.requests)

    def attempt(self, fields: dict[str, Any], out: Path) -> BaseException | None:
        """Run ``instant_id`` with ``fields``; the exception it raised (None if it did not)."""
        prompt = fields.pop("prompt", "a portrait")

        async def call() -> BaseException | None:
            try:
                await self.client.instant_id(
                    InstantIDRequest(prompt=prompt, **fields),
                    face_images=[self.png],
                    ref_images=[self.png],
                    out_dir=out,
                    timeout=5,
                )
            except Exception as exc:
                return exc
            return None

        return self.portal.call(call)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    config = EmulatorConfig(seed=1, task_base_seconds=0, image_mode="tiny", api_keys={API_KEY})
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        emu = Emulator(config)
        with portal.wrap_async_context_manager(emu):
            client = NovitaClient(API_KEY, base_url=emu.base_url, assets_url=emu.assets_url)
            with portal.wrap_async_context_manager(client):
                yield Service(portal, emu, client)


def _outside(name: str) -> st.SearchStrategy[Any]:
    allowed, integer = _REQUEST_NUMBERS[name]
    below = st.floats(max_value=allowed.low, exclude_max=True, allow_nan=False)
    options = [below]
    if allowed.high is not None:
        options.append(st.floats(min_value=allowed.high, exclude_min=True, allow_nan=False))
    numbers = st.one_of(*options)
    if integer:
        # Integers out of range, and floats (in range or not) where an integer belongs.
        low, high = int(allowed.low), None if allowed.high is None else int(allowed.high)
        ints = [st.integers(max_value=low - 1)]
        if high is not None:
            ints.append(st.integers(min_value=high + 1))
        return st.one_of(
            *ints,
            numbers.map(lambda x: x if math.isinf(x) else float(x)),
            st.floats(allow_nan=True),
        )
    return st.one_of(numbers, st.just(math.nan), st.just(math.inf), st.just(-math.inf))


_WRONG_TYPES = st.one_of(
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.binary(max_size=4),
)


@st.composite
def bad_field(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["number", "number-type", "sampler", "prompt", "model"]))
    if kind == "number":
        name = draw(st.sampled_from(sorted(_REQUEST_NUMBERS)))
        return name, draw(_outside(name))
    if kind == "number-type":
        return draw(st.sampled_from(sorted(_REQUEST_NUMBERS))), draw(_WRONG_TYPES)
    if kind == "sampler":
        text = st.text(max_size=12).filter(lambda s: s not in SAMPLERS)
        return "sampler_name", draw(st.one_of(text, st.integers(), st.booleans()))
    if kind == "prompt":
        name = draw(st.sampled_from(["prompt", "negative_prompt"]))
        too_long = st.integers(int(PROMPT_LENGTH.high or 1024) + 1, 3000).map(lambda n: "p" * n)
        return name, draw(st.one_of(st.just(""), too_long, st.integers(), st.lists(st.text())))
    return "model_name", draw(st.one_of(st.just(""), st.just("   "), st.integers(), st.none()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=bad_field())
def test_out_of_range_or_wrong_typed_fields_are_refused_before_any_request(
    service: Service, tmp_path_factory: pytest.TempPathFactory, field: tuple[str, Any]
) -> None:
    name, value = field
    before = service.requests()
    error = service.attempt({name: value}, tmp_path_factory.getbasetemp() / "never")
    assert isinstance(error, ValidationError), (name, value, error)
    assert error.field == name
    assert name in str(error)
    assert service.requests() == before  # nothing uploaded, nothing submitted


def test_a_good_request_does_reach_the_emulator(service: Service, tmp_path: Path) -> None:
    # The counter the property relies on does move when a request is sent.
    before = service.requests()
    assert service.attempt({"width": 128, "height": 128}, tmp_path) is None
    assert service.requests() > before


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, None) for name in REQUIRED]
    + [
        ("extra", {"response_image_type": "gif"}),
        ("loras", [{"model_name": "x"}]),
        ("controlnet", {"units": 5}),
    ],
)
def test_missing_required_fields_and_untyped_nested_fields_are_refused_up_front(
    service: Service, tmp_path: Path, name: str, value: Any
) -> None:
    before = service.requests()
    error = service.attempt({name: value}, tmp_path)
    assert isinstance(error, ValidationError), error
    assert error.field.startswith(name)  # nested fields name their path: extra.response_image_type
    assert service.requests() == before
