/**
 * The package's export: the client library (atomix-plugins-client), for
 * a program that installs the whole server package and wants its client
 * too. Runtimes install atomix-plugins-client alone.
 */
export * from "atomix-plugins-client";
