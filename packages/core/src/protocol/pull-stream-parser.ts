import { Code, PluginError } from "../errors/plugin-error.js";

/**
 * Reads a PullPlugin response body as it arrives off the wire (gRPC
 * length-prefixed messages, each a PullPluginResponse) and hands over the
 * bytes of every `data` field as views into the received chunks: nothing is
 * reassembled or copied, however the messages straddle the chunks. Unknown
 * fields are skipped, as protobuf requires.
 *
 * The server frames the message header and the chunk in one buffer, but the
 * transport cuts it wherever it likes (16 KiB HTTP/2 frames by default), so
 * every header byte may arrive on its own: the small fields are parsed a byte
 * at a time and the payload is sliced.
 */
export class PullStreamParser {
  private state: State = State.Prefix;
  /** Bytes of the gRPC prefix collected so far (flag and 32-bit length). */
  private prefix = Buffer.alloc(5);
  private prefixLength = 0;
  /** Bytes of the current message not yet parsed. */
  private messageLeft = 0;
  /** Bytes of the current field's value not yet passed on or skipped. */
  private fieldLeft = 0;
  private varint = 0;
  private varintShift = 0;
  private fieldNumber = 0;
  private dataSeen = false;

  constructor(private readonly onData: (data: Buffer) => void) {}

  /** True between messages: a stream that ends anywhere else was cut short. */
  get atMessageBoundary(): boolean {
    return this.state === State.Prefix && this.prefixLength === 0;
  }

  /** Parses one received chunk; throws INTERNAL on bytes that are not a PullPluginResponse stream. */
  push(chunk: Buffer): void {
    let at = 0;
    const end = chunk.length;
    while (at < end) {
      switch (this.state) {
        case State.Prefix: {
          const take = Math.min(5 - this.prefixLength, end - at);
          chunk.copy(this.prefix, this.prefixLength, at, at + take);
          this.prefixLength += take;
          at += take;
          if (this.prefixLength === 5) this.startMessage();
          break;
        }
        case State.Tag:
        case State.Length:
        case State.SkipVarint: {
          const byte = chunk[at++] as number;
          this.consumeHeaderByte();
          if (this.state === State.SkipVarint) {
            if (byte < 0x80) this.endField();
            break;
          }
          this.varint += (byte & 0x7f) * 2 ** this.varintShift;
          if (byte >= 0x80) {
            this.varintShift += 7;
            if (this.varintShift >= 35) throw malformed("a varint longer than 5 bytes");
            break;
          }
          const value = this.varint;
          this.varint = 0;
          this.varintShift = 0;
          if (this.state === State.Tag) this.startField(value);
          else this.startValue(value);
          break;
        }
        case State.Data:
        case State.Skip: {
          const take = Math.min(this.fieldLeft, end - at);
          if (this.state === State.Data) this.onData(chunk.subarray(at, at + take));
          at += take;
          this.fieldLeft -= take;
          this.messageLeft -= take;
          if (this.fieldLeft === 0) this.endField();
          break;
        }
      }
    }
  }

  private startMessage(): void {
    this.prefixLength = 0;
    if (this.prefix[0] !== 0) {
      throw malformed(
        "a compressed message, though the call asked for none (grpc-accept-encoding: identity)",
      );
    }
    this.messageLeft = this.prefix.readUInt32BE(1);
    this.dataSeen = false;
    if (this.messageLeft > 0) this.state = State.Tag;
  }

  private consumeHeaderByte(): void {
    if (this.messageLeft === 0) throw malformed("a field that runs past the end of its message");
    this.messageLeft -= 1;
  }

  private startField(tag: number): void {
    this.fieldNumber = Math.floor(tag / 8);
    if (this.fieldNumber === 0) throw malformed("field number 0");
    switch (tag & 7) {
      case 0:
        this.state = State.SkipVarint;
        break;
      case 1:
        this.startValue(8, State.Skip);
        break;
      case 2:
        this.state = State.Length;
        break;
      case 5:
        this.startValue(4, State.Skip);
        break;
      default:
        throw malformed(`wire type ${tag & 7}`);
    }
  }

  private startValue(length: number, skip?: State.Skip): void {
    if (length > this.messageLeft) throw malformed("a field that runs past the end of its message");
    const isData = skip === undefined && this.fieldNumber === DATA_FIELD;
    if (isData) {
      // proto3 keeps the last of repeated occurrences; a stream cannot take back bytes already passed on.
      if (this.dataSeen) throw malformed("two data fields in one message");
      this.dataSeen = true;
    }
    this.fieldLeft = length;
    this.state = isData ? State.Data : State.Skip;
    if (length === 0) this.endField();
  }

  private endField(): void {
    this.state = this.messageLeft === 0 ? State.Prefix : State.Tag;
  }
}

const DATA_FIELD = 1;

enum State {
  Prefix,
  Tag,
  Length,
  SkipVarint,
  Data,
  Skip,
}

function malformed(what: string): PluginError {
  return new PluginError(Code.Internal, `the server sent a malformed PullPlugin stream: ${what}`);
}
