"""The REST gateway: turns HTTP calls into bus requests and gRPC reads."""
