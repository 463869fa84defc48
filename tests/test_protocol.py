"""The Flight protocol's generated Python is exactly what ``make proto`` makes from the .proto files
beside it (with the pinned grpcio-tools), so the checked-in code can always be rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

PROTOCOL = Path(__file__).parent.parent / "src" / "arrowport" / "flight" / "protocol"


def test_generated_messages_match_their_proto_files(tmp_path: Path) -> None:
    protos = sorted(PROTOCOL.glob("*.proto"))
    assert protos
    for proto in protos:
        shutil.copy(proto, tmp_path / proto.name)
    for proto in protos:
        target = str(tmp_path / proto.name)
        status = protoc.main(
            ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", target]
        )
        assert status == 0
        for suffix in ("_pb2.py", "_pb2.pyi"):
            name = proto.stem + suffix
            assert (tmp_path / name).read_bytes() == (PROTOCOL / name).read_bytes(), name
