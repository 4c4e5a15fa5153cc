"""Smart meters reached through a head-end system (HES) over MQTT (seed 002, wire formats §5).

Fleet publishes `{"taskId", "commandId", "deviceId", "commandType", "params"}` to
`{prefix}/{deviceId}/command`; the HES answers on `{prefix}/{deviceId}/response` with
`{"taskId", "commandId", "deviceId", "status", "receivedAt", "responsePayload"}`. `commandId` is
the ledger's request id. Besides SUCCESS and FAILED, Fleet takes an intermediate `ACKNOWLEDGED`
(or `ACCEPTED`): the HES has the command and the result follows (the command is then never re-sent).
"""

KIND = "meter"
