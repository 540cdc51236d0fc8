/**
 * The digests a garbage collection must keep, compactly: the first 64 bits
 * of each, sorted, 8 bytes a digest. A million digests take 7.9 MiB, where
 * a Set of the digest strings took 127 MiB (Node.js 20). Two digests sharing
 * those bits only make the sweep keep a blob it could have freed, never free
 * one that is referenced.
 */
export class DigestMarks {
  #marks = new BigUint64Array(1024);
  #count = 0;
  #sorted = true;

  /** Marks `digest` (`sha256:<64 hex>`). */
  add(digest: string): void {
    if (this.#count === this.#marks.length) {
      const grown = new BigUint64Array(Math.max(1024, this.#marks.length * 2));
      grown.set(this.#marks);
      this.#marks = grown;
    }
    this.#marks[this.#count++] = prefixOf(digest);
    this.#sorted = false;
  }

  has(digest: string): boolean {
    if (!this.#sorted) {
      this.#marks = this.#marks.slice(0, this.#count).sort();
      this.#sorted = true;
    }
    const wanted = prefixOf(digest);
    let low = 0;
    let high = this.#count - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const value = this.#marks[middle] as bigint;
      if (value === wanted) return true;
      if (value < wanted) low = middle + 1;
      else high = middle - 1;
    }
    return false;
  }

  get size(): number {
    return this.#count;
  }
}

function prefixOf(digest: string): bigint {
  const hex = digest.startsWith("sha256:") ? digest.slice(7, 23) : digest.slice(0, 16);
  return BigInt(`0x${hex}`);
}
