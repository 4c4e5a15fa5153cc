"""ESP32 alarm panels: protobuf over MQTT with HMAC-tagged framing (wire-formats.md §1)."""
