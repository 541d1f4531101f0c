#include "util/string_edits.h"

namespace lp::test {

std::vector<std::string> one_edit_mutations(const std::string& s, std::mt19937& rng, int count,
                                            const EditUnit& insert, const EditUnit& replace) {
  std::vector<std::string> out;
  for (int i = 0; i < count && !s.empty(); ++i) {
    std::string m = s;
    const size_t at = rng() % m.size();
    switch (rng() % 3) {
      case 0:
        m.erase(at, 1);
        break;
      case 1:
        m.insert(at, 1, insert(m, at));
        break;
      default:
        m[at] = replace(m, at);
        break;
    }
    out.push_back(m);
  }
  return out;
}

}  // namespace lp::test
