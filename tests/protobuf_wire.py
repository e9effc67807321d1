"""The protobuf wire format and gRPC-web framing, written by hand for the fake KFP server
(tests/kfp_server.py): independent of the client's generated messages, so a test checks the
client's MLMD field numbers against these."""
import struct


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf encodes them
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def mlmd_value(value) -> bytes:
    """An MLMD Value: double_value (2) for numbers, string_value (3) for text."""
    if isinstance(value, str):
        return bytes_field(3, value.encode())
    return varint(2 << 3 | 1) + struct.pack("<d", float(value))


def mlmd_artifact(artifact_id: int, type_name: str, custom_properties: dict) -> bytes:
    """An MLMD Artifact: id (1), type (8), custom_properties (5, map<string, Value>)."""
    entries = b"".join(bytes_field(5, bytes_field(1, key.encode()) + bytes_field(2, mlmd_value(value)))
                       for key, value in custom_properties.items())
    return int_field(1, artifact_id) + bytes_field(8, type_name.encode()) + entries


def decode(message: bytes) -> dict:
    """Field number -> last value (int for varints, bytes for length-delimited) of a flat message."""
    fields, offset = {}, 0
    while offset < len(message):
        key, offset = read_varint(message, offset)
        if key & 7 == 0:
            fields[key >> 3], offset = read_varint(message, offset)
        else:
            length, offset = read_varint(message, offset)
            fields[key >> 3], offset = message[offset:offset + length], offset + length
    return fields


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
        if not byte & 0x80:
            return value, offset


def unframe(body: bytes) -> bytes:
    _, length = struct.unpack(">BI", body[:5])
    return body[5:5 + length]


def grpc_web(message: bytes, status: int = 0, detail: str = "") -> tuple[int, dict, bytes]:
    trailer = f"grpc-status:{status}\r\ngrpc-message:{detail}\r\n".encode()
    body = struct.pack(">BI", 0, len(message)) + message + struct.pack(">BI", 0x80, len(trailer)) + trailer
    return 200, {"Content-Type": "application/grpc-web+proto"}, body
