"""A stock Python gRPC client (grpcio) driving a real shard-sidecar, for tests/sidecar.rs.

Generates the stubs from crates/proto/proto/*.proto with grpc_tools.protoc into a temp
dir, then calls Open, Acknowledged (the recovered checkpoint), StartCommit, Acknowledged
and Status with default channel options (no grpc.default_authority), and prints one JSON
object of what it saw. Usage:

    grpcio_client.py PROTO_DIR TARGET CLOCK [TOKEN_FILE]

TARGET is what grpcio dials: unix:/path/to.sock, or 127.0.0.1:PORT (then TOKEN_FILE holds
the bearer token to send). CLOCK is a Gazette clock for the documents' stats.
"""

import importlib.resources
import json
import sys
import tempfile


def stubs(proto_dir, out_dir):
    from grpc_tools import protoc

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"{proto_dir}/triggers.proto",
        f"{proto_dir}/sidecar.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    sys.path.insert(0, out_dir)


def main():
    proto_dir, target, clock = sys.argv[1], sys.argv[2], int(sys.argv[3])
    metadata = ()
    if len(sys.argv) > 4:
        with open(sys.argv[4]) as f:
            metadata = (("authorization", "Bearer " + f.read().strip()),)
    with tempfile.TemporaryDirectory() as out_dir:
        stubs(proto_dir, out_dir)
        import grpc
        import sidecar_pb2
        import sidecar_pb2_grpc
        import triggers_pb2

        with grpc.insecure_channel(target) as channel:
            client = sidecar_pb2_grpc.ShardSidecarStub(channel)
            call = dict(metadata=metadata, timeout=30)
            opened = client.Open(sidecar_pb2.OpenRequest(), **call)
            client.Acknowledged(sidecar_pb2.AcknowledgedRequest(wait=True), **call)
            checkpoint = triggers_pb2.Checkpoint()
            checkpoint.sources["acmeCo/orders/pivot=00"].read_through = 7
            committed = client.StartCommit(
                sidecar_pb2.StartCommitRequest(
                    checkpoint=checkpoint,
                    stats=[
                        triggers_pb2.BindingStats(
                            binding=0,
                            docs=2,
                            bytes=10,
                            first_clock=clock,
                            last_clock=clock + 16,
                        )
                    ],
                ),
                **call,
            )
            acked = client.Acknowledged(
                sidecar_pb2.AcknowledgedRequest(wait=True), **call
            )
            status = client.Status(sidecar_pb2.StatusRequest(), **call)
            refused = None
            if metadata:
                try:
                    client.Status(sidecar_pb2.StatusRequest(), timeout=30)
                except grpc.RpcError as err:
                    refused = err.code().name
            print(
                json.dumps(
                    {
                        "recovered_offset": opened.checkpoint.sources[
                            "acmeCo/orders/pivot=00"
                        ].read_through,
                        "persisted": committed.triggers_persisted,
                        "flow_run_id": committed.flow_run_id,
                        "ack_ok": acked.outcome.ok,
                        "delivered": [t.delivered for t in acked.outcome.triggers],
                        "commits": status.commits,
                        "open": status.open,
                        "without_token": refused,
                    }
                )
            )


if __name__ == "__main__":
    main()
