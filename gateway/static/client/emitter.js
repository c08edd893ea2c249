// A minimal typed event emitter (no dependency on Node's or the DOM's).
export class Emitter {
    listeners = new Map();
    /** Call `listener` on every `name` event; returns a function that removes it. */
    on(name, listener) {
        let set = this.listeners.get(name);
        if (!set)
            this.listeners.set(name, (set = new Set()));
        set.add(listener);
        return () => this.off(name, listener);
    }
    off(name, listener) {
        this.listeners.get(name)?.delete(listener);
    }
    /** The next `name` event whose payload passes `filter`. */
    once(name, filter = () => true) {
        return new Promise((resolve) => {
            const off = this.on(name, (p) => {
                if (filter(p)) {
                    off();
                    resolve(p);
                }
            });
        });
    }
    emit(name, payload) {
        for (const listener of this.listeners.get(name) ?? []) {
            try {
                listener(payload);
            }
            catch (err) {
                queueMicrotask(() => {
                    throw err;
                });
            }
        }
    }
}
