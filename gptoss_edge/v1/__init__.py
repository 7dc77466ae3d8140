"""Generated gRPC stubs (protos/generate.py); do not edit."""
