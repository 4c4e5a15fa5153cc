"""Generated protobuf modules for the alarm-panel wire format.

`alarm_pb2` (package `esg.alarm`) and `heartbeat_pb2` (no package) are generated
from the .proto files next to this file; see README.md for the command.
"""
