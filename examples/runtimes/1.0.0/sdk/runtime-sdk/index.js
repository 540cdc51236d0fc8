export const SDK_VERSION = "1.0.0";

export function defineDriver(driver) {
  return Object.freeze(driver);
}

export function formatKey(key) {
  return `key:${key}`;
}
