"""Arrow Flight (gRPC) endpoint: ``do_put`` ingest, ``do_get`` / ``list_flights`` reads."""

from arrowport.flight.server import (
    ArrowportFlightServer,
    FlightStartError,
    flight_location,
    start_flight_server,
)

__all__ = ["ArrowportFlightServer", "FlightStartError", "flight_location", "start_flight_server"]
