import { createRequire } from "node:module";

/** The part of hpack.js's decompressor this client uses (the package ships no types). */
interface Decompressor {
  write(block: Buffer): void;
  /** Decodes what was written; a malformed block is emitted as "error", synchronously. */
  execute(): void;
  on(event: "error", listener: (error: Error) => void): void;
  read(): { name: string; value: string } | null;
}

const hpack = createRequire(import.meta.url)("hpack.js") as {
  decompressor: { create(options: { table: { maxSize: number } }): Decompressor };
};

/** RFC 9113's default SETTINGS_HEADER_TABLE_SIZE, which this client never changes. */
const HEADER_TABLE_SIZE = 4096;

/**
 * Decodes the header blocks of one connection, in order: HPACK's dynamic
 * table carries over from block to block, so one decoder serves a connection.
 */
export class HeaderBlockDecoder {
  private readonly decompressor = hpack.decompressor.create({ table: { maxSize: HEADER_TABLE_SIZE } });
  private failure: Error | undefined;

  constructor() {
    this.decompressor.on("error", (error) => {
      this.failure ??= error;
    });
  }

  /** The block's fields; names repeated are joined with ", ". Throws on a malformed block. */
  decode(block: Buffer): Map<string, string> {
    if (this.failure) throw this.failure; // the table is out of step with the server's for good
    this.decompressor.write(block);
    this.decompressor.execute();
    const fields = new Map<string, string>();
    for (let field = this.decompressor.read(); field; field = this.decompressor.read()) {
      const seen = fields.get(field.name);
      fields.set(field.name, seen === undefined ? field.value : `${seen}, ${field.value}`);
    }
    if (this.failure) throw this.failure;
    return fields;
  }
}
