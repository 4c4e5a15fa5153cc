"""Wi-Fi/Ethernet monitoring probes reporting over HTTP (seed 000, "collectr")."""

KIND = "reporter"
