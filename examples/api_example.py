"""The Python API in about ten lines: your own function, a space, a strategy, results.

Run: python examples/api_example.py
"""

import hpo


def objective(config):
    for epoch in range(1, 6):  # any Python code that reports metrics each step
        loss = (config["x"] - 0.3) ** 2 + (0.1 if config["kind"] == "b" else 0.0) + 1.0 / epoch
        hpo.report({"loss": loss})


if __name__ == "__main__":
    results = hpo.run(
        name="api-example", trainable=objective, metric="loss", mode="min",
        space={"x": hpo.Float(0.0, 1.0), "kind": hpo.Categorical(["a", "b"])},
        strategy={"searcher": "tpe", "scheduler": "asha", "max_t": 5},
        num_samples=12, resources={"cpu": 1},
    )
    print(results.best_config, results.best_metric)
    print(results.table()[["trial_id", "status", "config/x", "loss"]])
