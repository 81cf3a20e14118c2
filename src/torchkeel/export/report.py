"""What ``keel export`` prints: where the files went, how they were verified, and the
before/after table of a quantised export."""

from __future__ import annotations

from rich.table import Table

from torchkeel.export.quantize import QuantReport


def summary_lines(result) -> list[str]:  # noqa: ANN001 - ExportResult (import cycle)
    from torchkeel.export import TOLERANCE

    dims = (
        " and ".join(result.dynamic.values()) + " dynamic"
        if result.dynamic
        else f"batch fixed at {result.batch_sizes[0]}"
    )
    sizes = ", ".join(str(s) for s in result.batch_sizes)
    if result.prompt_lengths:  # a language model, also on prompts of these lengths
        sizes += "; prompts of " + ", ".join(str(n) for n in result.prompt_lengths) + " tokens"
    return [
        f"exported {result.model_file} ({result.format}, {dims})",
        f"verified with {result.runtime} on {result.inputs} inputs of {result.input_source} "
        f"(batches of {sizes}): max |difference| {result.max_abs_diff:.2e} < {TOLERANCE:.0e}"
        + (f" x {result.output_scale:.3g} (the outputs' scale)" if result.output_scale > 1 else ""),
        f"preprocessing: {result.folder / 'preprocess.json'}; sample inputs: "
        f"{result.folder / 'sample_inputs.safetensors'}",
    ]


def quant_table(report: QuantReport) -> Table:
    table = Table(title=f"dynamic int8 quantisation -> {report.file}", title_justify="left")
    table.add_column("")
    table.add_column("fp32", justify="right")
    table.add_column("int8", justify="right")
    if report.metric is not None:
        table.add_row(f"test {report.metric}", f"{report.before:.4f}", f"{report.after:.4f}")
    for batch, (fp32, int8) in report.latency_ms.items():
        table.add_row(f"latency, batch {batch} (median ms)", f"{fp32:.3f}", f"{int8:.3f}")
    table.add_row("file size (KiB)", f"{report.size_bytes[0] / 1024:.0f}", f"{report.size_bytes[1] / 1024:.0f}")
    table.add_row("max |fp32 - int8| of outputs", "", f"{report.max_abs_diff:.2e}")
    return table
