"""A token sent as ?token= never reaches the access log."""

import logging
import logging.config

from uvicorn.config import LOGGING_CONFIG

from fleet.api.redact import ACCESS_LOGGER, RedactTokens, redact_tokens_in_access_log


def test_tokens_in_query_strings_are_masked() -> None:
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/report/ongoing?device_id=pi&token=fleet_ingest_s3cret&x=1",
         "1.1", 200),
        None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    message = record.getMessage()
    assert "s3cret" not in message and "token=***&x=1" in message and "device_id=pi" in message


def test_the_filter_survives_uvicorns_logging_config() -> None:
    redact_tokens_in_access_log()
    redact_tokens_in_access_log()
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn does when it starts
    filters = logging.getLogger(ACCESS_LOGGER).filters
    assert sum(isinstance(f, RedactTokens) for f in filters) == 1
