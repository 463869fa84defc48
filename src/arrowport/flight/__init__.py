"""Arrow Flight (gRPC) endpoint: ``DoPut`` ingest, ``DoGet`` / ``ListFlights`` reads."""

from arrowport.flight.server import (
    ArrowportFlightServer,
    FlightStartError,
    flight_location,
    start_flight_server,
)

__all__ = ["ArrowportFlightServer", "FlightStartError", "flight_location", "start_flight_server"]
