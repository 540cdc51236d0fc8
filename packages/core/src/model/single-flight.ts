/**
 * One run of `start` per key at a time, its promise shared by every caller
 * that asks while it runs, forgotten once it settles. A caller who stops
 * waiting (abandonable) does not end it for the others.
 */
export class SingleFlight<T> {
  readonly #running = new Map<string, Promise<T>>();

  run(key: string, start: () => Promise<T>): Promise<T> {
    const running = this.#running.get(key);
    if (running) return running;
    const started = start();
    this.#running.set(key, started);
    const forget = () => {
      if (this.#running.get(key) === started) this.#running.delete(key);
    };
    started.then(forget, forget);
    return started;
  }
}
