"""PromptedInference with stand-in models (which images reach the model, the autocast precision, the
vocabulary embedding) and the evaluation precision (evaluation_dtype, EVAL_PRECISIONS, TEST.PRECISION)."""
import pytest
import torch

from semantic_sam.evaluation import PromptedInference
from semantic_sam.evaluation import prompted_inference as pi
from tests.utils.interactive_cases import _image_a, _image_b, _image_c, _labelled_images


def test_prompted_inference_skips_images_without_prompts():
    calls = []

    class Fake(torch.nn.Module):
        def inference(self, batched_inputs, **kwargs):
            calls.append(([x["image_id"] for x in batched_inputs], kwargs))
            return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]

    wrapper = PromptedInference(Fake(), tokens=[0])
    inputs = [_image_a()[0], _image_b()[0], _image_c()[0]]
    outs = wrapper(inputs)
    assert calls == [([11, 13], {"tokens": [0]})]
    assert outs[1] == {} and outs[0]["pred_masks"].shape[0] == 2 and outs[2]["pred_masks"].shape[0] == 1
    assert wrapper([_image_b()[0]]) == [{}] and len(calls) == 1


class _AutocastProbe(torch.nn.Module):
    """A model whose ``inference`` records the autocast state it runs under, on a device it claims."""

    def __init__(self, device: str = "cpu"):
        super().__init__()
        self.device = torch.device(device)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def inference(self, batched_inputs, **kwargs):
        dev = self.device.type
        on = torch.is_autocast_enabled(dev)
        self.seen.append((on, torch.get_autocast_dtype(dev) if on else torch.float32))
        return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]


def test_evaluation_dtype_resolves_auto_by_device():
    assert pi.evaluation_dtype("auto", "cpu") == torch.float32
    assert pi.evaluation_dtype("auto", "cuda:1") == torch.float16  # the reference's fp16 autocast
    assert pi.evaluation_dtype("fp32", "cuda") == torch.float32
    assert pi.evaluation_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="unknown evaluation precision 'bf16'"):
        pi.evaluation_dtype("bf16", "cpu")
    with pytest.raises(ValueError, match="TEST.PRECISION"):
        PromptedInference(_AutocastProbe(), precision="half")


@pytest.mark.parametrize("precision, expected", [("auto", (False, torch.float32)), ("fp32", (False, torch.float32)),
                                                 ("fp16", (True, torch.float16))])
def test_prompted_inference_runs_the_model_under_the_precision_on_cpu(precision, expected):
    probe = _AutocastProbe("cpu")
    PromptedInference(probe, precision=precision)([_image_a()[0]])
    assert probe.seen == [expected]
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks


def test_prompted_inference_passes_the_precision_to_torch_autocast(monkeypatch):
    """On a CUDA model, "auto" asks torch.autocast for float16 on "cuda" (spied: no GPU needed);
    "fp32" asks for a disabled context."""
    import contextlib

    calls = []

    def spy(device_type, dtype=None, enabled=True, **kwargs):
        calls.append((device_type, dtype if enabled else "off"))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", spy)
    PromptedInference(_AutocastProbe("cuda"))([_image_a()[0]])
    PromptedInference(_AutocastProbe("cuda"), precision="fp32")([_image_a()[0]])
    PromptedInference(_AutocastProbe("cpu"))([_image_a()[0]])
    assert calls == [("cuda", torch.float16), ("cuda", "off"), ("cpu", "off")]


def test_precision_is_a_checked_config_key():
    from semantic_sam import config_checks
    from semantic_sam.config import ConfigError, load_config

    assert config_checks.EVAL_PRECISIONS == pi.EVAL_PRECISIONS
    assert load_config(None).TEST.PRECISION == "auto"
    assert load_config(None, ["TEST.PRECISION=fp16"]).TEST.PRECISION == "fp16"
    with pytest.raises(ConfigError, match="TEST.PRECISION"):
        load_config(None, ["TEST.PRECISION=bf16"])


# ------------------------------------------------------------------------------------------ object labels
class _NamingModel(torch.nn.Module):
    """A model with (or without) a text encoder that records its calls."""

    def __init__(self, text_encoder: bool):
        super().__init__()
        self.text_encoder = torch.nn.Linear(1, 1) if text_encoder else None
        self.embedded: list[tuple] = []
        self.calls: list[tuple] = []

    def class_embeddings(self, objects, parts=None):
        self.embedded.append((tuple(objects), parts))
        return {"object": torch.eye(len(objects))}

    def inference(self, batched_inputs, **kwargs):
        emb = kwargs.get("class_embeddings")
        self.calls.append(([x["image_id"] for x in batched_inputs], None if emb is None else emb["object"].shape[0]))
        return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]


def test_prompted_inference_embeds_each_vocabulary_once_for_a_text_model():
    model = _NamingModel(text_encoder=True)
    wrapper = PromptedInference(model)
    (a_in, _), (c_in, _) = _labelled_images()
    plain = _image_c()[0]  # no vocabulary (e.g. SA-1B): no logits asked for
    plain["image_id"] = 14
    wrapper([a_in, plain, c_in])
    wrapper([c_in])
    assert model.embedded == [(("a", "b", "c"), None)]  # once, for both batches
    assert model.calls == [([11, 13], 3), ([14], None), ([13], 3)]
    # An explicit class_embeddings is passed as given; the inputs' vocabulary is not embedded.
    fixed = {"object": torch.zeros(5, 4)}
    model2 = _NamingModel(text_encoder=True)
    PromptedInference(model2, class_embeddings=fixed)([a_in])
    assert model2.embedded == [] and model2.calls == [([11], 5)]


def test_prompted_inference_asks_no_labels_of_a_model_without_text_encoder():
    model = _NamingModel(text_encoder=False)
    (a_in, _), (c_in, _) = _labelled_images()
    PromptedInference(model)([a_in, c_in])
    assert model.embedded == [] and model.calls == [([11, 13], None)]
