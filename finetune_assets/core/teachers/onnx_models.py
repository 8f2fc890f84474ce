"""What every ONNX model here shares: its `tokenizer.json` and `model.onnx` loaded for CPU, and batches of
encodings padded to their own longest (used by the cross-encoder teacher and the dense ONNX encoder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxModel:
    def __init__(self, model_dir: str | Path, *, max_length: int = 256, threads: int = 0) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # Shipped tokenizers may pad to a fixed 512: each batch is padded to its own longest instead.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def run(self, encodings, batch) -> np.ndarray:
        """The model's first output for `encodings[i]` for i in `batch`, padded to the batch's longest."""
        width = max(len(encodings[i].ids) for i in batch)
        inputs = {name: np.zeros((len(batch), width), dtype=np.int64)
                  for name in ("input_ids", "attention_mask", "token_type_ids")}
        inputs["input_ids"].fill(self.pad_id)
        for row, i in enumerate(batch):
            e = encodings[i]
            inputs["input_ids"][row, :len(e.ids)] = e.ids
            inputs["attention_mask"][row, :len(e.ids)] = e.attention_mask
            inputs["token_type_ids"][row, :len(e.ids)] = e.type_ids
        return self.session.run(None, {k: v for k, v in inputs.items() if k in self.input_names})[0]
