// Opens the archive given on the command line, prints its mode, switches it to eval and
// prints how many changes that made. Built against an installed exmode (tests/install/).
#include <cstddef>
#include <exception>
#include <iostream>

#include "exmode/model.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " ARCHIVE.pt2\n";
    return 2;
  }
  try {
    auto model = exmode::Model::open(argv[1]);
    std::cout << "mode: " << exmode::programModeName(model->mode()) << "\n";
    std::size_t changes = 0;
    for (const exmode::SwitchReport& report : model->eval()) changes += report.changes.size();
    std::cout << "changes: " << changes << "\n";
    std::cout << "mode after eval: " << exmode::programModeName(model->mode()) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
