"""Device simulators used for load tests, demos and end-to-end tests."""
