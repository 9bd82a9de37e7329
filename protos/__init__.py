"""The gRPC contracts (.proto) and the code generated from them by `python -m protos.codegen`."""
