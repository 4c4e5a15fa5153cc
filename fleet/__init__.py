"""Fleet: open-source backend for fleets of IoT devices."""
