// The mode passes, in the order they run. Adding an op family: write its file in this
// folder, declare its accessor here and add it to the list.
#include "exmode/passes.h"

namespace exmode {

namespace passes {
const ModePass& dropoutPass();
const ModePass& batchNormPass();
const ModePass& attentionDropoutPass();
const ModePass& instanceNormPass();
const ModePass& rreluPass();
const ModePass& dropPathPass();
const ModePass& rnnPass();
const ModePass& functionalIrPass();
const ModePass& batchNormFunctionalPass();
const ModePass& dropoutFunctionalPass();
}  // namespace passes

const std::vector<const ModePass*>& modePasses() {
  // functional_ir first: it refuses programs it cannot switch before any pass changes them.
  static const std::vector<const ModePass*> kPasses = {
      &passes::functionalIrPass(),
      &passes::dropoutPass(),
      &passes::batchNormPass(),
      &passes::attentionDropoutPass(),
      &passes::instanceNormPass(),
      &passes::rreluPass(),
      &passes::dropPathPass(),
      &passes::rnnPass(),
      &passes::batchNormFunctionalPass(),
      &passes::dropoutFunctionalPass(),
  };
  return kPasses;
}

}  // namespace exmode
