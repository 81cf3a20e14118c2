"""A language model exported to ONNX with a dynamic sequence length, checked against the
PyTorch logits on real prompts through the run's tokeniser, at several lengths."""

import json

import pytest
import torch
from lm_helpers import corpus_spec, one_torch_thread, write_run  # noqa: F401 (a fixture)

pytest.importorskip("onnxruntime")

from torchkeel.errors import ExportError  # noqa: E402
from torchkeel.export import export_run  # noqa: E402
from torchkeel.export.formats import load_onnx  # noqa: E402
from torchkeel.export.lm import PROMPTS, prompt_inputs, verify_prompts  # noqa: E402
from torchkeel.generation import load_tokenizer  # noqa: E402
from torchkeel.run_model import load_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("export") / "lm-run", corpus_spec(block=16))
    return run, export_run(run, "onnx")


def test_the_onnx_logits_match_pytorch_on_real_prompts_at_two_lengths(exported):
    run, result = exported
    model, spec, _ = load_model(run)
    assert result.dynamic == {0: "batch", 1: "length"} and len(set(result.prompt_lengths)) >= 2
    assert result.max_abs_diff < 1e-4
    onnx = load_onnx(result.model_file)
    tokenizer = load_tokenizer(spec)
    for prompt in ("ROMEO:", "What light through yonder window"):  # 6 and 16 (cropped) tokens
        ids = torch.tensor([tokenizer.encode(prompt)[-16:]])
        with torch.inference_mode():
            expected = model(ids)
        got = onnx(ids)
        assert got.shape == (1, ids.shape[1], 61)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    batch = torch.randint(0, 61, (3, 9))  # another batch size and length than the export's example
    with torch.inference_mode():
        torch.testing.assert_close(onnx(batch), model(batch), atol=1e-4, rtol=0)


def test_the_export_records_the_lm_output_and_the_tokeniser(exported):
    run, result = exported
    doc = json.loads((result.folder / "preprocess.json").read_text())
    assert doc["input"]["shape"] == ["batch", "length"] and doc["input"]["dtype"] == "int64"
    assert doc["output"]["shape"] == ["batch", "length", 61]
    assert doc["spec"]["extra"]["tokenizer"]["type"] == "char"  # what turns text into the input ids


def test_prompts_are_encoded_by_the_runs_tokeniser_at_different_lengths():
    spec = corpus_spec(block=16)
    inputs = prompt_inputs(spec, 16)
    tokenizer = load_tokenizer(spec)
    assert [x[0].tolist() for x in inputs[:3]] == [tokenizer.encode(p)[-16:] for p in PROMPTS]
    assert len({x.shape[1] for x in inputs}) >= 2
    assert len({x.shape[1] for x in prompt_inputs(spec, 4)}) >= 2  # all cropped to 4: a shorter one is added


def test_an_export_that_fixed_the_length_is_refused(exported):
    run, _ = exported
    model, spec, _ = load_model(run)

    def fixed_length(x):  # what a graph traced at one length would give for others
        return model(torch.nn.functional.pad(x, (0, 16 - x.shape[1])))

    with pytest.raises(ExportError, match=r"export gives logits of shape \(1, 16, 61\) for a 6-token prompt"):
        verify_prompts(model, fixed_length, spec, 1e-4)
