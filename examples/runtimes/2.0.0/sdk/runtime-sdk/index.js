export const SDK_VERSION = "2.0.0";

export function defineDriver(driver) {
  if (driver.apiVersion !== 2) throw new TypeError("runtime 2 loads apiVersion 2 drivers only");
  return Object.freeze(driver);
}

export function createContext(runtimeVersion) {
  const lines = [];
  return {
    runtimeVersion,
    log(message) {
      lines.push(message);
    },
  };
}
