export const plugin = {
  name: "no-export",
  handle(request) {
    return request.key;
  },
};
