"""The local stack and traffic tools: moto and redis-server on 127.0.0.1, the AWS resources, synthetic
traffic (`streamkpi generate`) and `streamkpi demo`. Needs the `local` extra (moto, hypercorn); the worker image
does not install it."""
