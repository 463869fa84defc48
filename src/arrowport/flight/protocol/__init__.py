"""Flight's protobuf messages, generated from ``flight.proto`` (``make proto``)."""
