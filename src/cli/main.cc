// whittle: one binary, subcommands. Each subcommand lives in its own cli/<name>.cc.
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "whittle: not yet\n");
  return 1;
}
