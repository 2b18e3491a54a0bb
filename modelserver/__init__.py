"""A stand-in for TF Serving: real SavedModels over TF Serving's gRPC and REST APIs.

Built on the official `tensorflow_serving.apis` stubs so clients cannot tell
it from the real server for the calls Shadowgate makes (Predict,
GetModelMetadata, GetModelStatus, REST predict/status/metadata, Prometheus
metrics), plus fault injection (latency, errors, stalls) for demos, tests
and benchmarks. Run it with `shadowgate modelserver` or `python -m modelserver`.
"""
