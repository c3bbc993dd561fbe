#!/usr/bin/env python3
"""Train the digits classifier that Brink's inference tests and example use, offline.

Trains a small MLP on scikit-learn's bundled `load_digits` data (8x8 images, pixel values 0-16;
no download) and writes it as a standard-operator ONNX graph (opset 17: Mul, Gemm, Relu,
Softmax). skl2onnx is not used on purpose: it emits `ai.onnx.ml` operators that tract cannot load.

Writes, next to this script:
  digits.onnx       the model: input `pixels` f32[N,64] (raw 0-16 values), output
                    `probabilities` f32[N,10]; the batch dimension N is symbolic.
  digits-test.json  the stratified held-out 25%: pixels, labels, and the accuracy and correct
                    count the exported graph scores on them (checked with onnxruntime when it is
                    installed, and always with numpy).

Regenerate:
  python3 -m venv /tmp/digits-venv
  /tmp/digits-venv/bin/pip install scikit-learn onnx numpy onnxruntime
  /tmp/digits-venv/bin/python examples/digits/train_digits.py
"""

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = pathlib.Path(__file__).resolve().parent
SEED = 0
HIDDEN = 32


def build_graph(clf: MLPClassifier) -> onnx.ModelProto:
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    inits = [
        numpy_helper.from_array(np.array([1.0 / 16.0], dtype=np.float32), "scale"),
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(b1.astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
        numpy_helper.from_array(b2.astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Mul", ["pixels", "scale"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "w1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits-mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="brink-train-digits",
    )
    # Readers as old as onnxruntime 1.20 accept IR 8.
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def numpy_forward(clf: MLPClassifier, x: np.ndarray) -> np.ndarray:
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    x = x.astype(np.float32) * np.float32(1.0 / 16.0)
    h = np.maximum(x @ w1.astype(np.float32) + b1.astype(np.float32), 0)
    return h @ w2.astype(np.float32) + b2.astype(np.float32)


def main() -> None:
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, stratify=digits.target, random_state=SEED
    )
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=600, random_state=SEED)
    clf.fit(x_train / 16.0, y_train)

    model = build_graph(clf)
    (HERE / "digits.onnx").write_bytes(model.SerializeToString())

    predicted = numpy_forward(clf, x_test).argmax(axis=1)
    sklearn_predicted = clf.predict(x_test / 16.0)
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(HERE / "digits.onnx"))
        (probs,) = session.run(None, {"pixels": x_test.astype(np.float32)})
        ort_predicted = probs.argmax(axis=1)
        assert (ort_predicted == predicted).all(), "onnxruntime disagrees with numpy"
    except ImportError:
        print("onnxruntime not installed: the graph was checked with numpy only")

    correct = int((predicted == y_test).sum())
    accuracy = correct / len(y_test)
    print(
        f"held-out samples {len(y_test)}, correct {correct}, accuracy {accuracy:.4f} "
        f"(scikit-learn itself: {(sklearn_predicted == y_test).mean():.4f})"
    )
    test_set = {
        "description": "Stratified held-out 25% of scikit-learn's load_digits, seed 0; "
        "written by train_digits.py with the model it was scored on",
        "input": "pixels",
        "output": "probabilities",
        "samples": len(y_test),
        "correct": correct,
        "accuracy": accuracy,
        "labels": [int(v) for v in y_test],
        "predicted": [int(v) for v in predicted],
        "pixels": [[int(v) for v in row] for row in x_test],
    }
    (HERE / "digits-test.json").write_text(json.dumps(test_set, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
