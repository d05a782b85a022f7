from .substitutions import perform


class IfCondition:
    def __init__(self, predicate_expression) -> None:
        self.predicate_expression = predicate_expression

    def evaluate(self, context) -> bool:
        value = perform(self.predicate_expression, context).strip().lower()
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise ValueError(f"Unknown condition value '{value}'")  # InvalidConditionExpressionError
